"""A corpus of bad campaign inputs: every one is refused at the door, cleanly.

Each case writes a campaign file (and, for some, a pipeline, a symlink or a FIFO) into a
fresh tree::

    <tmp>/root/            the only allowed root
        campaigns/c.yaml   the campaign under test
        pipelines/         a copy of include/pipelines/minidrp.yaml
        data/              data_root (empty)
    <tmp>/outside/         outside every allowed root

and calls ``load_campaign(..., check_pipeline=True, allowed_roots=[<tmp>/root])``, the
full validation the DAG's ``validate_campaign`` runs. Each case asserts that

(a) the error is a ``CampaignConfigError`` (never another exception, never a hang: the
    inputs that used to hang, a 50 MB file and an alias bomb, are refused before parsing
    or at the alias; no case is timed);
(b) the message starts with the campaign file and names the field (or the key, or the
    line, for a file that is not valid YAML);
(c) nothing was written: the tree holds exactly the files it held before, and the work
    directory does not exist.

Module-level imports are the standard library, PyYAML and pytest only, so
:func:`materialise` and :data:`CASES` can be replayed against another version of the
loader (how the report's count of cases the old loader accepted was made).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "include" / "campaigns" / "minidrp_embedded.yaml"
PIPELINE = REPO / "include" / "pipelines" / "minidrp.yaml"


@dataclass
class Ctx:
    """The tree of one case (see the module docstring)."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def campaign(self) -> Path:
        return self.root / "campaigns" / "c.yaml"

    @property
    def pipelines(self) -> Path:
        return self.root / "pipelines"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def outside(self) -> Path:
        return self.base / "outside"


@dataclass
class Case:
    id: str
    expect: str  # regex the message must match: it names the field (or key, or line)
    doc: Callable[[dict], Any] | None = None  # edit of the embedded campaign (as a dict)
    text: str | bytes | Callable[[Ctx], str | bytes] | None = None  # the campaign file's content instead
    setup: Callable[[Ctx], Any] | None = None  # extra files, links, pipelines
    kwargs: Callable[[Ctx], dict] | None = None  # load_campaign keyword arguments
    path: Callable[[Ctx], Path] | None = None  # the file to load (default: ctx.campaign)
    tags: tuple[str, ...] = field(default_factory=tuple)


def base_doc() -> dict:
    doc = yaml.safe_load(EMBEDDED.read_text())
    doc["pipeline"] = "../pipelines/minidrp.yaml"
    doc["data_root"] = "../data"
    return doc


def materialise(case: Case, base: Path) -> tuple[Path, dict]:
    """Write the case's tree under ``base``; return (file to load, extra load_campaign kwargs)."""
    ctx = Ctx(base)
    for d in (ctx.root / "campaigns", ctx.pipelines, ctx.data, ctx.outside):
        d.mkdir(parents=True, exist_ok=True)
    shutil.copy(PIPELINE, ctx.pipelines / "minidrp.yaml")
    (ctx.outside / "evil.yaml").write_text("description: outside\ntasks: {}\n")
    if case.text is not None:
        text = case.text(ctx) if callable(case.text) else case.text
        if isinstance(text, bytes):
            ctx.campaign.write_bytes(text)
        else:
            ctx.campaign.write_text(text)
    else:
        doc = base_doc()
        if case.doc is not None:
            case.doc(doc)
        ctx.campaign.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    if case.setup is not None:
        case.setup(ctx)
    path = case.path(ctx) if case.path else ctx.campaign
    return path, (case.kwargs(ctx) if case.kwargs else {})


# -- helpers for the corpus -------------------------------------------------------------------


def put(dotted: str, value: Any) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        node: Any = doc
        keys = dotted.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def both(*edits: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        for e in edits:
            e(doc)
    return edit


def text_of(edit: Callable[[dict], None] | None = None) -> str:
    doc = base_doc()
    if edit:
        edit(doc)
    return yaml.safe_dump(doc, sort_keys=False)


BASE_TEXT = text_of()


def replace_text(old: str, new: str, count: int = 1) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        assert old in BASE_TEXT, old
        return BASE_TEXT.replace(old, new, count)
    return make


def append_text(extra: str) -> Callable[[Ctx], str]:
    return lambda ctx: BASE_TEXT + extra


def bomb(levels: int = 9) -> str:
    """A "billion laughs": 9**levels strings from a few hundred bytes."""
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def laughs() -> str:
    return BASE_TEXT + bomb()


def merge_bomb() -> str:
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for i in range(1, 20):
        lines.append(f"m{i}: &m{i}\n  <<: [*m{i - 1}, *m{i - 1}]\n  k{i}: [*m{i - 1}, *m{i - 1}]")
    return BASE_TEXT + "\n".join(lines) + "\n"


def sparse_file(size: int) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        with open(ctx.campaign, "r+b") as fh:
            fh.truncate(size)
    return setup


def pipeline_variant(text: Callable[[str], str], name: str = "variant.yaml") -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        (ctx.pipelines / name).write_text(text(PIPELINE.read_text()))
    return setup


def symlink(link: Callable[[Ctx], Path], target: Callable[[Ctx], Path]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        t = target(ctx)
        t.mkdir(parents=True, exist_ok=True) if not t.suffix else t.write_text("description: x\ntasks: {}\n")
        link(ctx).symlink_to(t)
    return setup


def fifo(ctx: Ctx) -> None:
    ctx.campaign.unlink()
    os.mkfifo(ctx.campaign)


SITE = r"sites\[1\] \(frdf\)"
S0 = r"sites\[0\] \(usdf\)"

CASES: list[Case] = [
    # -- the YAML layer: size, encoding, structure, duplicate keys, anchors -----------------
    Case("dup_key_sites", r"duplicate key 'sites' at line \d+ \(first at line \d+\)",
         text=append_text("sites: []\n")),
    Case("dup_key_nested_share", r"duplicate key 'share' at line \d+ \(first at line \d+\)",
         text=replace_text("  share: 0.4\n", "  share: 0.4\n  share: 0.9\n")),
    Case("dup_key_name", r"duplicate key 'name' at line 2 \(first at line 1\)",
         text=lambda ctx: "name: a\nname: b\n" + BASE_TEXT.split("\n", 1)[1]),
    Case("dup_key_in_flow_mapping", r"duplicate key 'butler'",
         text=append_text("x: {butler: a, butler: b}\n")),
    Case("anchor_and_alias", r"line \d+.*anchor &c: anchors, aliases and merge keys are not allowed",
         text=append_text("extra: &c {a: 1}\nagain: *c\n")),
    Case("merge_key", r"line \d+.*(anchor|merge key).*not allowed",
         text=append_text("base: {a: 1}\nother:\n  <<: {b: 2}\n")),
    Case("billion_laughs", r"line 1\d*, column \d+: found anchor &l0", text=lambda ctx: laughs()),
    Case("merge_bomb", r"found anchor &m0", text=lambda ctx: merge_bomb()),
    Case("file_50_mb", r"campaign file is 52428800 bytes; expected at most 1 MiB",
         text=BASE_TEXT, setup=sparse_file(50 << 20)),
    Case("file_just_over_1_mib", r"campaign file is 10\d{5} bytes; expected at most 1 MiB",
         text=lambda ctx: BASE_TEXT + ("# padding comment line to grow the file past the cap\n" * 20500)),
    Case("real_2_mb_list", r"expected at most 1 MiB",
         text=lambda ctx: BASE_TEXT + "junk: [" + ", ".join(["1"] * 700_000) + "]\n"),
    Case("latin1_byte", r"not UTF-8 text: byte 0xe9 at line 7",
         text=lambda ctx: "\n".join(BASE_TEXT.split("\n")[:6]).encode() + b"\ndescription: caf\xe9\n"
         + "\n".join(BASE_TEXT.split("\n")[7:]).encode()),
    Case("utf16_file", r"not UTF-8 text: byte 0xff at line 1", text=lambda ctx: BASE_TEXT.encode("utf-16")),
    Case("deep_flow_nesting", r"line 1, column \d+: nesting deeper than 50 levels",
         text=lambda ctx: "name: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    Case("deep_block_nesting", r"nesting deeper than 50 levels",
         text=lambda ctx: BASE_TEXT + "".join("  " * i + f"k{i}:\n" for i in range(60)) + "  " * 60 + "v: 1\n"),
    Case("too_many_nodes", r"more than 20000 nodes",
         text=lambda ctx: BASE_TEXT + "junk: [" + ", ".join(["1"] * 30_000) + "]\n"),
    Case("two_documents", r"line \d+, column 1: expected a single document",
         text=lambda ctx: BASE_TEXT + "---\nname: other\n"),
    Case("control_character", r"not valid YAML.*control characters are not allowed",
         text=replace_text("description: Nine-step", "description: Nine\x07step")),
    Case("python_object_tag", r"line \d+.*constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
         text=append_text("boom: !!python/object/apply:os.system ['touch /tmp/pwned']\n")),
    Case("custom_include_tag", r"line \d+.*constructor for the tag '!include'",
         text=append_text("more: !include ../../outside/evil.yaml\n")),
    Case("tab_indentation", r"not valid YAML at line \d+", text=append_text("planner2:\n\tmethod: graph\n")),
    Case("unterminated_flow", r"not valid YAML at line \d+", text=append_text("extra: [1, 2\n")),
    Case("empty_file", r"expected a mapping of campaign fields at the top level, got NoneType", text=""),
    Case("top_level_list", r"expected a mapping of campaign fields at the top level, got list",
         text="- name: a\n- name: b\n"),
    Case("top_level_string", r"expected a mapping .* got str", text="just a sentence\n"),
    Case("unhashable_key", r"line \d+.*key that is a list or mapping", text=append_text("? [a, b]\n: 1\n")),
    Case("integer_of_5000_digits", r"a value cannot be read \(Exceeds the limit",
         text=append_text("seedling: " + "9" * 5000 + "\n")),
    Case("impossible_date", r"a value cannot be read \(month must be in 1..12\)",
         text=append_text("when: 2024-13-45\n")),
    Case("campaign_is_a_directory", r"cannot read campaign file: not a regular file",
         path=lambda ctx: ctx.root / "campaigns"),
    Case("campaign_is_a_fifo", r"cannot read campaign file: not a regular file", setup=fifo),
    Case("campaign_missing", r"cannot read campaign file: No such file",
         path=lambda ctx: ctx.root / "campaigns" / "nope.yaml"),
    # -- strict types: nothing coerced, numbers finite, sizes bounded ----------------------
    Case("share_as_string", SITE + r"\.share: Input should be a valid number", doc=put("sites.1.share", "0.4")),
    Case("share_as_bool", SITE + r"\.share: Input should be a valid number", doc=put("sites.1.share", True)),
    Case("share_null", SITE + r"\.share: Input should be a valid number", doc=put("sites.1.share", None)),
    Case("share_list", SITE + r"\.share: Input should be a valid number", doc=put("sites.1.share", [0.4])),
    Case("share_nan", SITE + r"\.share: Input should be a finite number", doc=put("sites.1.share", float("nan"))),
    Case("share_inf", SITE + r"\.share: Input should be a finite number", doc=put("sites.1.share", float("inf"))),
    Case("share_zero", r"sites\[2\] \(ukdf\)\.share: Input should be greater than 0", doc=put("sites.2.share", 0)),
    Case("share_above_one", SITE + r"\.share: Input should be less than or equal to 1", doc=put("sites.1.share", 1.5)),
    Case("rate_infinite", r"rate_target\.quanta_per_hour: Input should be a finite number",
         doc=put("rate_target.quanta_per_hour", float("inf"))),
    Case("rate_as_string", r"rate_target\.quanta_per_hour: Input should be a valid number",
         doc=put("rate_target.quanta_per_hour", "2000")),
    Case("rate_huge", r"rate_target\.quanta_per_hour: Input should be less than or equal to",
         doc=put("rate_target.quanta_per_hour", 1e300)),
    Case("visits_rate_bool", r"rate_target\.visits_per_hour: Input should be a valid number",
         doc=put("rate_target.visits_per_hour", False)),
    Case("threshold_as_string", r"failed_quanta_threshold: Input should be a valid number",
         doc=put("failed_quanta_threshold", "0.1")),
    Case("threshold_as_bool", r"failed_quanta_threshold: Input should be a valid number",
         doc=put("failed_quanta_threshold", True)),
    Case("group_size_as_string", r"planner\.max_group_size: Input should be a valid integer",
         doc=put("planner.max_group_size", "1000")),
    Case("group_size_fraction", r"planner\.max_group_size: Input should be a valid integer",
         doc=put("planner.max_group_size", 1000.5)),
    Case("group_size_huge_int", r"planner\.max_group_size: Input should be less than or equal to 10000000",
         doc=put("planner.max_group_size", 10**30)),
    Case("default_bytes_negative", r"planner\.default_dataset_bytes: Input should be greater than 0",
         doc=put("planner.default_dataset_bytes", -1)),
    Case("dataset_bytes_negative", r"planner\.dataset_bytes\.raw: Input should be greater than 0",
         doc=put("planner.dataset_bytes", {"raw": -5})),
    Case("dataset_bytes_string", r"planner\.dataset_bytes\.raw: Input should be a valid integer",
         doc=put("planner.dataset_bytes", {"raw": "big"})),
    Case("dataset_bytes_float", r"planner\.dataset_bytes\.pvi: Input should be a valid integer",
         doc=put("planner.dataset_bytes", {"pvi": 1.0e20})),
    Case("dataset_bytes_huge", r"planner\.dataset_bytes\.pvi: Input should be less than or equal to",
         doc=put("planner.dataset_bytes", {"pvi": 10**40})),
    Case("dataset_bytes_bad_type_name", r"planner\.dataset_bytes\.raw-data\.\[key\]: String should match",
         doc=put("planner.dataset_bytes", {"raw-data": 5})),
    Case("seed_negative", r"planner\.seed: Input should be greater than or equal to 0", doc=put("planner.seed", -1)),
    Case("seed_bool", r"planner\.seed: Input should be a valid integer", doc=put("planner.seed", True)),
    Case("trials_as_string", r"planner\.partition_trials: Input should be a valid integer",
         doc=put("planner.partition_trials", "48")),
    Case("share_tolerance_nan", r"planner\.share_tolerance: Input should be a finite number",
         doc=put("planner.share_tolerance", float("nan"))),
    Case("lifetime_as_string", r"replication\.lifetime_days: Input should be a valid number",
         doc=put("replication.lifetime_days", "30")),
    Case("lifetime_too_long", r"replication\.lifetime_days: Input should be less than or equal to 3650",
         doc=put("replication.lifetime_days", 1e9)),
    Case("holds_all_raws_string", S0 + r"\.holds_all_raws: Input should be a valid boolean",
         doc=put("sites.0.holds_all_raws", "yes")),
    Case("holds_all_raws_int", S0 + r"\.holds_all_raws: Input should be a valid boolean",
         doc=put("sites.0.holds_all_raws", 1)),
    Case("name_as_int", r"name: Input should be a valid string", doc=put("name", 123)),
    Case("instrument_as_bool", r"instrument: Input should be a valid string", doc=put("instrument", True)),
    Case("collections_as_string", r"input_collections: Input should be a valid list",
         doc=put("input_collections", "MiniCam/defaults")),
    Case("collections_int_item", r"input_collections\[0\]: Input should be a valid string",
         doc=put("input_collections", [123])),
    Case("requires_as_string", r"steps\[0\] \(step1\)\.requires: Input should be a valid list",
         doc=put("steps.0.requires", "raw")),
    Case("requires_repeated", r"steps\[0\] \(step1\)\.requires: .*repeated: raw",
         doc=put("steps.0.requires", ["raw", "raw"])),
    Case("requires_int_item", r"steps\[0\] \(step1\)\.requires\[0\]: Input should be a valid string",
         doc=put("steps.0.requires", [1])),
    Case("sites_as_mapping", r"sites: Input should be a valid list", doc=put("sites", {"usdf": {"role": "hub"}})),
    Case("site_as_string", r"sites\[1\]: Input should be a valid dictionary", doc=put("sites.1", "frdf")),
    Case("step_as_list", r"steps\[0\]: Input should be a valid dictionary", doc=put("steps.0", ["step1"])),
    Case("connection_id_int", S0 + r"\.connections\.butler: Input should be a valid string",
         doc=put("sites.0.connections.butler", 42)),
    Case("cluster_by_string", r"planner\.cluster_by\.visit: Input should be a valid list",
         doc=put("planner.cluster_by", {"visit": "visit"})),
    Case("cluster_by_unknown_sharding", r"planner\.cluster_by\.healpix\.\[key\]: Input should be 'visit' or 'tract'",
         doc=put("planner.cluster_by", {"healpix": ["healpix8"]})),
    Case("cluster_by_empty", r"planner\.cluster_by\.visit: List should have at least 1 item",
         doc=put("planner.cluster_by", {"visit": []})),
    Case("cluster_by_repeated", r"planner\.cluster_by: .*visit: expected each dimension once",
         doc=put("planner.cluster_by", {"visit": ["visit", "visit"]})),
    Case("cluster_by_bad_pattern", r"planner\.cluster_by\.visit\[0\]: String should match pattern",
         doc=put("planner.cluster_by", {"visit": ["Visit!"]})),
    Case("cluster_by_not_a_dimension", r"planner\.cluster_by\.visit: \['notadimension'\] are not dimensions",
         doc=put("planner.cluster_by", {"visit": ["notadimension"]})),
    Case("unknown_top_level_field", r"sitez: unknown field", doc=put("sitez", [])),
    Case("unknown_nested_field", r"planner\.methd: unknown field", doc=put("planner.methd", "graph")),
    Case("removed_returns_field", r"steps\[3\] \(step4\)\.returns: unknown field",
         doc=put("steps.3.returns", ["deepCoadd"])),
    Case("steps_empty", r"steps: List should have at least 1 item", doc=put("steps", [])),
    Case("sites_empty", r"sites: List should have at least 1 item", doc=put("sites", [])),
    Case("hub_missing", r"sites: expected exactly one site with role 'hub', found 0",
         doc=put("sites.0.role", "remote")),
    Case("two_hubs", r"sites: expected exactly one site with role 'hub', found 2", doc=put("sites.1.role", "hub")),
    Case("role_wrong_case", SITE + r"\.role: Input should be 'hub' or 'remote'", doc=put("sites.1.role", "Hub")),
    Case("rse_clash", r"sites: every site needs its own rse", doc=put("sites.2.rse", "FRDF_LOCAL_DISK")),
    Case("shares_above_one", r"sites: shares must sum to 1.0, they sum to 1.1", doc=put("sites.1.share", 0.5)),
    Case("shares_below_one", r"sites: shares must sum to 1.0, they sum to 0.9", doc=put("sites.1.share", 0.3)),
    Case("site_name_repeated", r"sites: site names must be unique; repeated: usdf", doc=put("sites.1.name", "usdf")),
    Case("step_name_repeated", r"steps: step names must be unique; repeated: step1", doc=put("steps.1.name", "step1")),
    Case("subset_twice", r"steps: subset 'step1' is planned twice \(steps\[0\] \(step1\), steps\[1\] \(step2\)\)",
         doc=put("steps.1.subset", "step1")),
    Case("sharding_unknown", r"steps\[2\] \(step3\)\.sharding: Input should be 'visit', 'tract' or 'global'",
         doc=put("steps.2.sharding", "healpix")),
    Case("sharding_int", r"steps\[2\] \(step3\)\.sharding: Input should be 'visit', 'tract' or 'global'",
         doc=put("steps.2.sharding", 1)),
    Case("orphan_policy_unknown", r"planner\.orphan_visits: String should match pattern",
         doc=put("planner.orphan_visits", "maybe")),
    Case("method_unknown", r"planner\.method: Input should be 'graph', 'ra_stripes' or 'round_robin'",
         doc=put("planner.method", "kmeans")),
    Case("output_prefix_absolute", r"output_prefix: String should match pattern", doc=put("output_prefix", "/abs")),
    Case("scope_too_long", r"replication\.scope: String should match pattern", doc=put("replication.scope", "a" * 26)),
    Case("compute_site_shell", S0 + r"\.compute_site: String should match pattern",
         doc=put("sites.0.compute_site", "local; rm -rf /")),
    Case("timeout_as_string", r"timeouts\.command_seconds: Input should be a valid number",
         doc=put("timeouts", {"command_seconds": "60"})),
    Case("on_kill_unknown", r"on_kill\.workflows: Input should be 'cancel' or 'leave'",
         doc=put("on_kill", {"workflows": "explode"})),
    # -- unicode tricks in names and free text ---------------------------------------------
    Case("campaign_name_rtl_override", r"name: String should match pattern", doc=put("name", "minidrp\u202egnp")),
    Case("site_name_cyrillic", r"sites\[1\] \(\S+\)\.name: String should match pattern",
         doc=put("sites.1.name", "fr\u0501f")),
    Case("step_name_fullwidth", r"steps\[0\] \(\S+\)\.name: String should match pattern",
         doc=put("steps.0.name", "ｓtep1")),
    Case("title_bidi_override", S0 + r"\.title: character U\+202E at position 5 is not allowed",
         doc=put("sites.0.title", "USDF\u202e)CALS(")),
    Case("description_zero_width", r"description: character U\+200B", doc=put("description", "Nine\u200bstep")),
    Case("step_description_escape", r"steps\[0\] \(step1\)\.description: character U\+001B",
         doc=put("steps.0.description", "ISR \x1b[31mred")),
    Case("collection_homoglyph", r"input_collections\[0\]: String should match pattern",
         doc=put("input_collections", ["MiniCam/def\u0430ults"])),
    # -- data_query: one complete butler expression ------------------------------------------
    Case("query_breakout", r"data_query: .*closes a parenthesis that is not open",
         doc=put("data_query", "instrument = 'MiniCam') OR (visit > 0")),
    Case("query_breakout_short", r"data_query: .*closes a parenthesis that is not open",
         doc=put("data_query", "a) OR (b")),
    Case("query_unclosed_quote", r"data_query: a string literal is not closed",
         doc=put("data_query", "instrument = 'MiniCam")),
    Case("query_open_parenthesis", r"data_query: 1 parenthesis\(es\) left open",
         doc=put("data_query", "((instrument = 'MiniCam')")),
    Case("query_semicolon", r"data_query: expected a single-line butler query expression without ';'",
         doc=put("data_query", "instrument = 'MiniCam'; DROP TABLE dataset")),
    Case("query_newline", r"data_query: expected a single-line", doc=put("data_query", "visit = 1\nOR visit = 2")),
    Case("query_bind_name", r"data_query: bind name :v is not allowed", doc=put("data_query", "visit = :v")),
    Case("query_syntax_error", r"data_query: the butler's parser rejects it: Syntax error at or near '='",
         doc=put("data_query", "instrument = = 'MiniCam'")),
    Case("query_not_a_condition", r"data_query: 'visit' is an expression of type Identifier, not a condition",
         doc=put("data_query", "visit")),
    Case("query_dangling_or", r"data_query: the butler's parser rejects it: End of input",
         doc=put("data_query", "instrument = 'MiniCam' OR")),
    Case("query_too_long", r"data_query: String should have at most 2000 characters",
         doc=put("data_query", "visit IN (" + ", ".join(["1"] * 700) + ")")),
    # -- paths: allowed roots, data_root, no expansion, symlinks ------------------------------
    Case("pipeline_absolute_outside", r"pipeline: '/etc/hosts' is outside the allowed roots",
         doc=put("pipeline", "/etc/hosts")),
    Case("pipeline_traversal", r"pipeline: '\.\./\.\./outside/evil\.yaml' .*is outside the allowed roots",
         doc=put("pipeline", "../../outside/evil.yaml")),
    Case("pipeline_env_var", r"pipeline: environment variables are not expanded",
         doc=put("pipeline", "$HOME/pipelines/minidrp.yaml")),
    Case("pipeline_home", r"pipeline: '~' is not expanded", doc=put("pipeline", "~/minidrp.yaml")),
    Case("pipeline_nul_byte", r"pipeline: expected a path without control characters",
         doc=put("pipeline", "../pipelines/mini\x00drp.yaml")),
    Case("pipeline_symlink_out", r"pipeline: '\.\./pipelines/link\.yaml' \(resolves to .*outside/real\.yaml\) is "
         r"outside the allowed roots",
         doc=put("pipeline", "../pipelines/link.yaml"),
         setup=symlink(lambda c: c.pipelines / "link.yaml", lambda c: c.outside / "real.yaml")),
    Case("data_root_slash", r"data_root: '/' is outside the allowed roots", doc=put("data_root", "/")),
    Case("data_root_traversal", r"data_root: '\.\./\.\./\.\.' is outside the allowed roots",
         doc=put("data_root", "../../..")),
    Case("data_root_env_var", r"data_root: environment variables are not expanded", doc=put("data_root", "${HOME}")),
    Case("data_root_home", r"data_root: '~' is not expanded", doc=put("data_root", "~/data")),
    Case("data_root_symlink_out", r"data_root: '\.\./linkdata' \(resolves to .*outside/sites\) is outside",
         doc=put("data_root", "../linkdata"),
         setup=symlink(lambda c: c.root / "linkdata", lambda c: c.outside / "sites")),
    Case("data_root_param_outside", r"data_root: '/etc' is outside the allowed roots",
         kwargs=lambda ctx: {"data_root": "/etc"}),
    Case("data_root_param_env", r"data_root: environment variables are not expanded",
         kwargs=lambda ctx: {"data_root": "$AIRFLOW_HOME"}),
    Case("work_dir_traversal", r"work_dir: '\.\./\.\./outside' leaves data_root", doc=put("work_dir", "../../outside")),
    Case("work_dir_absolute_elsewhere", r"work_dir: '/tmp/elsewhere' leaves data_root",
         doc=put("work_dir", "/tmp/elsewhere")),
    Case("work_dir_env_var", r"work_dir: environment variables are not expanded", doc=put("work_dir", "$TMPDIR/w")),
    Case("work_dir_symlink_out", r"work_dir: 'work' resolves to .*outside/work.* outside data_root",
         setup=symlink(lambda c: c.data / "work", lambda c: c.outside / "work")),
    Case("butler_repo_traversal", S0 + r"\.butler_repo: '\.\./\.\./outside' leaves data_root",
         doc=put("sites.0.butler_repo", "../../outside")),
    Case("butler_repo_absolute_outside", S0 + r"\.butler_repo: '/etc' is outside the allowed roots",
         doc=put("sites.0.butler_repo", "/etc")),
    Case("butler_repo_file_uri", S0 + r"\.butler_repo: 'file:///etc/butler' is outside the allowed roots",
         doc=put("sites.0.butler_repo", "file:///etc/butler")),
    Case("butler_repo_home", S0 + r"\.butler_repo: '~' is not expanded", doc=put("sites.0.butler_repo", "~/repo")),
    Case("butler_repo_shell", S0 + r"\.butler_repo: expected a path or URI with no whitespace or shell characters",
         doc=put("sites.0.butler_repo", "usdf; rm -rf ~")),
    Case("campaign_file_outside_roots", r"campaign file: .*outside/c\.yaml is outside the allowed roots",
         setup=lambda ctx: shutil.copy(ctx.campaign, ctx.outside / "c.yaml"), path=lambda ctx: ctx.outside / "c.yaml"),
    Case("campaign_file_env_path", r"campaign file: environment variables are not expanded",
         path=lambda ctx: Path("$HOME/c.yaml")),
    Case("campaign_symlink_out", r"campaign file: .*campaigns/link\.yaml \(resolves to .*outside/c2\.yaml\) is outside",
         setup=lambda ctx: (shutil.copy(ctx.campaign, ctx.outside / "c2.yaml"),
                            (ctx.root / "campaigns" / "link.yaml").symlink_to(ctx.outside / "c2.yaml")),
         path=lambda ctx: ctx.root / "campaigns" / "link.yaml"),
    # -- the pipeline: its files inside the roots, a real pipeline, steps in its order ------------
    Case("pipeline_imports_outside", r"pipeline: .*variant\.yaml imports '.*outside/evil\.yaml' is outside the allowed",
         doc=put("pipeline", "../pipelines/variant.yaml"),
         setup=lambda ctx: (ctx.pipelines / "variant.yaml").write_text(
             PIPELINE.read_text() + f"imports:\n  - location: {ctx.outside / 'evil.yaml'}\n")),
    Case("pipeline_imports_env", r"pipeline: .*variant\.yaml imports '\$HOME/x\.yaml' is outside the allowed roots",
         doc=put("pipeline", "../pipelines/variant.yaml"),
         setup=pipeline_variant(lambda t: t + "imports: [$HOME/x.yaml]\n")),
    Case("pipeline_imports_http", r"pipeline: .*imports 'https://example\.org/p\.yaml': a https:// location",
         doc=put("pipeline", "../pipelines/variant.yaml"),
         setup=pipeline_variant(lambda t: t + "imports: [https://example.org/p.yaml]\n")),
    Case("pipeline_config_file_outside", r"pipeline: .*tasks\.isr\.config\.file '/etc/evil_config\.py' is outside",
         doc=put("pipeline", "../pipelines/variant.yaml"),
         setup=pipeline_variant(lambda t: t.replace(
             "  isr: minidrp.tasks.step1.IsrTask\n",
             "  isr:\n    class: minidrp.tasks.step1.IsrTask\n    config:\n      - file: /etc/evil_config.py\n"))),
    Case("pipeline_is_the_campaign", r"pipeline: .*campaigns/c\.yaml is not a pipeline \(no 'tasks' mapping",
         doc=put("pipeline", "c.yaml")),
    Case("pipeline_random_yaml", r"pipeline: .*random\.yaml is not a pipeline",
         doc=put("pipeline", "../pipelines/random.yaml"),
         setup=lambda ctx: (ctx.pipelines / "random.yaml").write_text("a: 1\nb: [2, 3]\n")),
    Case("pipeline_yaml_list", r"pipeline: .*list\.yaml is not a pipeline",
         doc=put("pipeline", "../pipelines/list.yaml"),
         setup=lambda ctx: (ctx.pipelines / "list.yaml").write_text("- isr\n- calibrate\n")),
    Case("pipeline_alias_bomb", r"pipeline: .*bomb\.yaml: not valid YAML at line \d+.*more than 50000 nodes",
         doc=put("pipeline", "../pipelines/bomb.yaml"),
         setup=lambda ctx: (ctx.pipelines / "bomb.yaml").write_text("description: x\ntasks: {}\n" + bomb())),
    Case("pipeline_not_utf8", r"pipeline: .*latin\.yaml: pipeline is not UTF-8 text",
         doc=put("pipeline", "../pipelines/latin.yaml"),
         setup=lambda ctx: (ctx.pipelines / "latin.yaml").write_bytes(b"description: caf\xe9\ntasks: {}\n")),
    Case("pipeline_missing", r"pipeline: file .*nope\.yaml does not exist", doc=put("pipeline", "../pipelines/nope.yaml")),
    Case("pipeline_is_a_directory", r"pipeline: file .*pipelines does not exist", doc=put("pipeline", "../pipelines")),
    Case("pipeline_duplicate_key", r"pipeline: .*dupe\.yaml: not valid YAML .*duplicate key 'tasks'",
         doc=put("pipeline", "../pipelines/dupe.yaml"),
         setup=pipeline_variant(lambda t: t + "tasks: {}\n", "dupe.yaml")),
    Case("subset_not_in_pipeline", r"steps\[5\] \(step6\)\.subset: expected one of the pipeline's subsets",
         doc=put("steps.5.subset", "step10")),
    Case("steps_out_of_order", r"steps\[0\] \(step2\)\.subset: 'step2' consumes \w+, which steps\[1\] \(step1\) makes "
         r"later",
         doc=lambda d: d["steps"].insert(0, d["steps"].pop(1))),
    Case("requires_made_later", r"steps\[1\] \(step2\)\.requires\[1\]: deepCoadd is made by steps\[3\] \(step4\), a "
         r"later step",
         doc=put("steps.1.requires", ["src", "deepCoadd"])),
    Case("requires_made_by_itself", r"steps\[0\] \(step1\)\.requires\[1\]: pvi is made by this step itself",
         doc=put("steps.0.requires", ["raw", "pvi"])),
    Case("requires_unknown_type", r"steps\[3\] \(step4\)\.requires\[0\]: notAType is neither made by an earlier step "
         r"nor an input of the pipeline",
         doc=put("steps.3.requires", ["notAType"])),
    Case("type_made_by_two_steps", r"steps: \w+ is made by steps\[0\] \(step1\) and steps\[9\] \(again\)",
         doc=both(put("pipeline", "../pipelines/variant.yaml"),
                  lambda d: d["steps"].append({"name": "again", "subset": "isr_again", "sharding": "visit"})),
         setup=pipeline_variant(lambda t: t.replace("subsets:\n", "subsets:\n  isr_again: [isr]\n"))),
    # -- the Params' site selection -----------------------------------------------------------
    Case("sites_selection_without_hub", r"sites: the selection \['frdf'\] leaves out the hub 'usdf'",
         kwargs=lambda ctx: {"sites": ["frdf"]}),
    Case("sites_selection_unknown", r"sites: the selection names \['nodf'\], which the campaign does not define",
         kwargs=lambda ctx: {"sites": ["usdf", "nodf"]}),
    Case("sites_selection_string_share", SITE + r"\.share: Input should be a valid number",
         doc=put("sites.1.share", "0.4"), kwargs=lambda ctx: {"sites": ["usdf", "frdf"]}),
    Case("sites_selection_bool_share", S0 + r"\.share: Input should be a valid number",
         doc=put("sites.0.share", True), kwargs=lambda ctx: {"sites": ["usdf", "ukdf"]}),
]


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "fifo" if p.is_fifo() else "file"
        out[str(p.relative_to(root))] = kind
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, tmp_path: Path) -> None:
    from multisite_drp.campaign.config import CampaignConfigError, load_campaign

    path, kwargs = materialise(case, tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(Exception) as info:  # any type: (a) below asserts it is exactly CampaignConfigError
        load_campaign(path, check_pipeline=True, allowed_roots=[tmp_path / "root"], **kwargs)
    message = str(info.value)
    # (a) the one error type, never a traceback of another kind
    assert type(info.value) is CampaignConfigError, f"{type(info.value).__name__}: {message}"
    # (b) the file first, then the field (or key, or line)
    assert message.startswith(str(path)), message
    assert re.search(case.expect, message), f"expected /{case.expect}/ in:\n{message}"
    # (c) nothing written, nothing started
    assert _tree(tmp_path) == before
    assert not (tmp_path / "root" / "data" / "work").exists() or case.id == "work_dir_symlink_out"
    assert list((tmp_path / "root" / "data").iterdir()) == ([] if case.id != "work_dir_symlink_out"
                                                            else [tmp_path / "root" / "data" / "work"])


def test_corpus_size_and_classes() -> None:
    """At least 100 cases, every class of the issue represented."""
    ids = {c.id for c in CASES}
    assert len(CASES) == len(ids) >= 100
    for needed in ("dup_key_sites", "billion_laughs", "file_50_mb", "latin1_byte", "deep_flow_nesting",
                   "share_as_string", "share_as_bool", "query_breakout", "steps_out_of_order", "requires_made_later",
                   "work_dir_traversal", "data_root_traversal", "dataset_bytes_negative", "rate_infinite",
                   "pipeline_is_the_campaign", "subset_twice", "butler_repo_traversal", "work_dir_symlink_out",
                   "cluster_by_not_a_dimension", "campaign_name_rtl_override", "hub_missing", "rse_clash"):
        assert needed in ids, needed


def test_the_base_of_the_corpus_is_valid(tmp_path: Path) -> None:
    """The unedited tree loads under the same checks: each case fails for its own edit."""
    from multisite_drp.campaign.config import load_campaign

    path, _ = materialise(Case("base", ""), tmp_path)
    cfg = load_campaign(path, check_pipeline=True, allowed_roots=[tmp_path / "root"])
    assert cfg.data_root_path == (tmp_path / "root" / "data").resolve()
    assert cfg.work_path == cfg.data_root_path / "work" and not cfg.work_path.exists()


def test_breakout_query_cannot_widen_a_site_query(tmp_path: Path) -> None:
    """The breakout from the issue is refused at validation; an accepted query stays one
    parenthesised operand of the AND that restricts a site (checked on the butler's tree)."""
    from lsst.daf.butler.queries.expressions.parser import parse_expression
    from lsst.daf.butler.queries.expressions.parser.exprTree import BinaryOp, IsIn, Parens
    from multisite_drp.campaign.plan import id_query
    from multisite_drp.campaign.query import QueryError, parse_query

    breakout = "instrument = 'MiniCam') OR (visit > 0"
    # Unchecked, the breakout would make every visit pass at every site:
    widened = parse_expression(f"({breakout}) AND visit IN (1, 2)")
    assert isinstance(widened, BinaryOp) and widened.op == "OR"
    for q in (breakout, "a) OR (b", "x = 1) OR (y = 2) AND (z = 3"):
        with pytest.raises(QueryError):
            parse_query(q)
        with pytest.raises(QueryError):
            id_query("visit", [1, 2], q)
    good = "instrument = 'MiniCam' OR skymap = 'minisky'"
    tree = parse_expression(id_query("visit", [1, 2], good))
    assert isinstance(tree, BinaryOp) and tree.op == "AND"
    assert isinstance(tree.lhs, Parens) and isinstance(tree.rhs, IsIn)
    assert str(tree.lhs.expr) == str(parse_expression(good))


def test_allowed_roots_admit_what_is_inside(tmp_path: Path) -> None:
    """The rules refuse only what leaves the roots: a symlink inside them, an absolute
    butler repo inside them and a work_dir under data_root are fine."""
    from multisite_drp.campaign.config import load_campaign

    def edit(doc: dict) -> None:
        doc["work_dir"] = str(tmp_path / "root" / "alias" / "deep" / "work")
        doc["sites"][1]["butler_repo"] = str(tmp_path / "root" / "data" / "frdf")

    case = Case("inside", "", doc=edit, setup=symlink(lambda c: c.root / "alias", lambda c: c.data))
    path, _ = materialise(case, tmp_path)
    cfg = load_campaign(path, data_root=tmp_path / "root" / "alias", allowed_roots=[tmp_path / "root"])
    assert cfg.repo_of("usdf") == str(tmp_path / "root" / "alias" / "usdf")


def test_deployment_roots_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from multisite_drp.campaign.config import CampaignConfigError, load_campaign
    from multisite_drp.campaign.paths import ALLOWED_ROOTS_ENV, PathError
    from multisite_drp.hooks.campaign import DEFAULT_ROOTS, CampaignHook, deployment_roots

    monkeypatch.delenv(ALLOWED_ROOTS_ENV, raising=False)
    assert deployment_roots().roots == tuple(p.resolve() for p in DEFAULT_ROOTS)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert deployment_roots().roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, "relative/dir")
    with pytest.raises(PathError, match=f"{ALLOWED_ROOTS_ENV}: 'relative/dir' is not an absolute path"):
        deployment_roots()
    # The hook holds Params to the deployment's roots: the embedded campaign is not inside tmp_path/a.
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(tmp_path / "a"))
    with pytest.raises(CampaignConfigError, match=r"campaign file: .* is outside the MULTISITE_DRP_ALLOWED_ROOTS"):
        CampaignHook(str(EMBEDDED))
    monkeypatch.delenv(ALLOWED_ROOTS_ENV)
    with pytest.raises(CampaignConfigError, match=r"data_root: .* is outside the default allowed roots"):
        CampaignHook(str(EMBEDDED), data_root=str(tmp_path))
    assert CampaignHook(str(EMBEDDED)).config.name == "minidrp"
    # The trusted path (no roots given) is unchanged for scripts and tests.
    assert load_campaign(EMBEDDED, data_root=tmp_path, check_pipeline=False).data_root_path == tmp_path


def test_copy_of_case_list_is_not_shared() -> None:
    """Each case edits its own copy of the base document."""
    a, b = base_doc(), base_doc()
    put("sites.0.share", 0.1)(a)
    assert b["sites"][0]["share"] == 0.35 and copy.deepcopy(b) == base_doc()
