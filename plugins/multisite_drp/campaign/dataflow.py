"""What each step produces and consumes, read from the pipeline, so transfers are derived, not listed.

The planner needs, per step, the dataset types its pipeline subset writes (with their
dimensions: a visit-, tract- or survey-level product) and the overall inputs of the
pipeline (raws, calibs, refcats, the skymap). It reads them from the real pipeline
with ``lsst.pipe.base`` (``Pipeline.from_uri(f"{path}#{subset}")`` and its pipeline
graph, resolved against the default dimension universe). Tests and the benchmark can
build a :class:`Dataflow` directly from a mapping instead.

The campaign's ``requires`` lists stay the authority for which types are transferred;
the dataflow only says where each required type comes from and what its dimensions are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from multisite_drp.errors import InputError

from .config import CampaignConfig

__all__ = ["Dataflow", "DataflowError", "StepIO", "check_dataflow", "dataflow_from_mapping", "dataflow_from_pipeline",
           "key_of"]


class DataflowError(InputError, ValueError):
    """A step requires a dataset type nothing produces, or the pipeline cannot be read."""


@dataclass(frozen=True)
class StepIO:
    name: str
    produces: dict[str, frozenset[str]]
    consumes: dict[str, frozenset[str]]


@dataclass
class Dataflow:
    steps: list[StepIO]
    inputs: dict[str, frozenset[str]] = field(default_factory=dict)  # types no step produces

    def step_index(self, name: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == name:
                return i
        raise KeyError(name)

    def producer(self, step: str, dataset_type: str) -> int | None:
        """Index of the latest step before ``step`` that produces ``dataset_type``."""
        i = self.step_index(step)
        for j in range(i - 1, -1, -1):
            if dataset_type in self.steps[j].produces:
                return j
        return None

    def dimensions(self, dataset_type: str) -> frozenset[str] | None:
        for s in self.steps:
            if dataset_type in s.produces:
                return s.produces[dataset_type]
        for s in self.steps:
            if dataset_type in s.consumes:
                return s.consumes[dataset_type]
        return self.inputs.get(dataset_type)

    def bootstrap_types(self) -> list[str]:
        """Overall inputs that are not per-exposure (calibs, refcats, skymap): replicated up front."""
        return sorted(t for t, dims in self.inputs.items() if key_of(dims) != "visit")


def key_of(dims: frozenset[str]) -> str:
    """The dimension that decides where a dataset lives: 'visit', 'tract' or 'none'."""
    if "visit" in dims or "exposure" in dims:
        return "visit"
    if "tract" in dims:
        return "tract"
    return "none"


def dataflow_from_mapping(config: CampaignConfig, steps: Mapping[str, Mapping[str, Mapping[str, list[str]]]],
                          inputs: Mapping[str, list[str]] | None = None) -> Dataflow:
    """Build from ``{step: {"produces": {type: dims}, "consumes": {type: dims}}}`` (tests, benchmark)."""
    out = []
    for s in config.steps:
        spec = steps.get(s.name, {})
        out.append(StepIO(s.name, {k: frozenset(v) for k, v in spec.get("produces", {}).items()},
                          {k: frozenset(v) for k, v in spec.get("consumes", {}).items()}))
    produced = {t for s in out for t in s.produces}
    ins = {k: frozenset(v) for k, v in (inputs or {}).items()}
    for s in out:
        for t, dims in s.consumes.items():
            if t not in produced:
                ins.setdefault(t, dims)
    return Dataflow(out, ins)


def dataflow_from_pipeline(config: CampaignConfig) -> Dataflow:
    """Read every step's subset of the campaign pipeline with lsst.pipe.base."""
    from lsst.daf.butler import DimensionUniverse
    from lsst.pipe.base import Pipeline

    universe = DimensionUniverse()
    path = config.pipeline_path
    steps: list[StepIO] = []
    for i, s in enumerate(config.steps):
        uri = f"{path}#{s.subset}"
        try:
            graph = Pipeline.from_uri(uri).to_graph()
            graph.resolve(dimensions=universe)
        except Exception as exc:  # the pipeline's own error, re-raised with the file and the step named
            raise DataflowError(f"{config.source_path}: pipeline: cannot read {uri} (subset of steps[{i}] ({s.name})): "
                                f"{type(exc).__name__}: {exc}") from exc
        produces: dict[str, frozenset[str]] = {}
        consumes: dict[str, frozenset[str]] = {}
        for label in graph.tasks:
            for name, node in graph.outputs_of(label).items():
                if node is not None:
                    produces[name] = frozenset(node.dimensions.required)
        for name, node in graph.iter_overall_inputs():
            if node is not None:
                consumes[name] = frozenset(node.dimensions.required)
        steps.append(StepIO(s.name, produces, consumes))
    produced = {t for st in steps for t in st.produces}
    inputs: dict[str, frozenset[str]] = {}
    for st in steps:
        for t, dims in st.consumes.items():
            if t not in produced:
                inputs.setdefault(t, dims)
    return Dataflow(steps, inputs)


def check_dataflow(config: CampaignConfig, flow: Dataflow) -> list[str]:
    """What is wrong with the campaign's steps against the pipeline's dataflow (empty: nothing).

    * every ``requires`` type is made by an earlier step or is an input of the pipeline;
    * no step's subset consumes a type that only a later step makes (steps in pipeline order);
    * no dataset type is made by two steps (their subsets overlap: a task would run twice).

    Each message starts with the field (``steps[i] (name).requires[k]``), as the
    campaign loader reports them after the file's name.
    """
    steps = config.steps
    problems: list[str] = []
    makers: dict[str, list[int]] = {}
    for i, io in enumerate(flow.steps):
        for t in io.produces:
            makers.setdefault(t, []).append(i)
    for t, idx in sorted(makers.items()):
        if len(idx) > 1:
            who = " and ".join(f"steps[{j}] ({steps[j].name})" for j in idx)
            problems.append(f"steps: {t} is made by {who}; expected each dataset type made by one step "
                            "(overlapping subsets would run a task twice)")
    for i, (st, io) in enumerate(zip(steps, flow.steps, strict=True)):
        for t in sorted(io.consumes):
            idx = makers.get(t, [])
            if idx and min(idx) > i:
                j = min(idx)
                problems.append(f"steps[{i}] ({st.name}).subset: {st.subset!r} consumes {t}, which steps[{j}] "
                                f"({steps[j].name}) makes later; expected the steps in the pipeline's order")
        for k, t in enumerate(st.requires):
            idx = makers.get(t, [])
            if any(j < i for j in idx):
                continue
            field = f"steps[{i}] ({st.name}).requires[{k}]"
            if idx:
                j = idx[0]
                who = "this step itself" if j == i else f"steps[{j}] ({steps[j].name}), a later step"
                problems.append(f"{field}: {t} is made by {who}; expected a type an earlier step makes or an "
                                "input of the pipeline")
            elif t not in flow.inputs:
                known = sorted({u for j in range(i) for u in flow.steps[j].produces} | set(flow.inputs))
                shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
                problems.append(f"{field}: {t} is neither made by an earlier step nor an input of the pipeline; "
                                f"expected one of {shown}")
    return problems
