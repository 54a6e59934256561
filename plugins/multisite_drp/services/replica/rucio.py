"""The Rucio replica adapter: rucio-clients for rules and status, lsst-rucio-register for
registration. The same code serves a Data Facility's Rucio and the embedded sites' local
Rucio server (``include/localrucio``).

Identity and naming:

* one scope per campaign (``replication.scope``); dataset DIDs are named by
  ``campaign.names.rucio_dataset``; a file's DID name is its path below
  ``<rse_root>/<scope>/`` (lsst-rucio-register's convention, so every site's butler
  datastore lies at ``<rse_root>/<scope>``), and its metadata is lsst-rucio-register's
  ``rubin_butler`` / ``rubin_sidecar`` (the DatasetRef as JSON, with its dimension
  records, so a destination can ingest without the source registry);
* each site acts with its own Rucio identity, from its own replica Connection: a site
  registers the files at its RSE and owns the rules that bring data to its RSE (its
  quota is there). All sites must name the same Rucio server.

Look before acting: files already in a dataset are not registered again, a complete
dataset is closed, and a rule is found (by dataset and RSE) before one is added, so a
retried task never makes a second rule. Status is read in batches: one
``list_replication_rules`` call per destination site, however many rules it has.

``verify_ingested`` asks the destination butler: Rucio's OK says the files arrived, not
that the Replica Monitor (or ctrl_ingestd) has ingested them.

Credentials never leave this module's clients: settings (what triggers and XCom may see)
hold no secret; passwords arrive separately as :class:`RucioCredentials`.

No Airflow imports.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multisite_drp.crashpoints import crashpoint
from multisite_drp.services.replica.base import (
    IngestCheck,
    RegisteredDataset,
    ReplicaAuthError,
    ReplicaError,
    ReplicaService,
    ReplicaUnavailableError,
    RuleRef,
    RuleState,
    RuleStatus,
)

if TYPE_CHECKING:
    from lsst.daf.butler import Butler, DatasetRef

    from multisite_drp.services.butler import SiteButler

__all__ = ["RucioCredentials", "RucioReplicaService", "RucioSite", "rubin_interface"]

log = logging.getLogger(__name__)

#: DIDs per ``get_metadata_bulk`` / attach call (Rucio's REST layer caps request sizes).
CHUNK = 1000
#: How long a call keeps trying while the Rucio server is unreachable (a restart, a network blip).
OUTAGE_SECONDS = 180.0
#: lsst-rucio-register's ``rubin_butler`` kinds (``lsst.rucio.register.data_type.DataType``).
DATA_PRODUCT, RAW_FILE = "data_product", "raw_file"
RAW_DATASET_TYPE = "raw"


@dataclasses.dataclass(frozen=True)
class RucioSite:
    """Where a site's data lives in Rucio, and who the site is there (no secrets)."""

    site: str
    rse: str
    repo: str  # the site's butler repository
    rucio_host: str
    auth_host: str
    account: str
    username: str
    auth_type: str = "userpass"
    rse_root: str | None = None  # path below which <scope>/ holds the butler datastore; None: the repo
    dtn_url: str | None = None  # PFN base for the RSE root; None: file:// + rse_root
    ca_cert: str | None = None
    conn_id: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RucioSite:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass(frozen=True, repr=False)
class RucioCredentials:
    """A site's secret, from its Connection's password field. Never logged (no repr)."""

    password: str

    def __repr__(self) -> str:
        return "RucioCredentials(***)"


def _epoch(value: Any) -> float | None:
    """Rucio's dates (RFC 1123 strings from the REST API, or datetimes) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            try:
                dt = datetime.fromisoformat(str(value))
            except ValueError:
                return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def rubin_interface(butler: Butler, site: RucioSite, scope: str, rse_root: str, dtn_url: str, client: Any,
                    rubin_butler_type: str = DATA_PRODUCT):
    """lsst-rucio-register's ``RucioInterface`` acting through ``client`` (this site's identity).

    ``RucioInterface.__init__`` builds its own ``ReplicaClient()`` and ``DIDClient()`` from
    the process-wide Rucio config; a worker serving three sites needs one identity per
    site, from Airflow Connections, so the instance is made without that constructor and
    given the site's client for both roles. Everything else (DID names, PFNs, adler32,
    ``rubin_butler``/``rubin_sidecar`` metadata, attach with ``ignore_duplicate``,
    back-off) is the package's own code.
    """
    from lsst.rucio.register.rucio_interface import RucioInterface

    ri = RucioInterface.__new__(RucioInterface)
    ri.butler = butler
    ri.rse = site.rse
    ri.scope = scope
    ri.rse_root = rse_root
    ri.dtn_url = dtn_url
    ri.pfn_base = dtn_url
    ri.replica_client = client
    ri.did_client = client
    ri.rubin_butler_type = rubin_butler_type
    return ri


class RucioReplicaService(ReplicaService):
    """``ReplicaService`` on a Rucio server, one identity per site."""

    def __init__(self, *, scope: str, sites: Mapping[str, RucioSite], credentials: Mapping[str, RucioCredentials],
                 campaign: str, activity: str, lifetime: int | None = None, hub: str | None = None,
                 client_factory: Callable[[RucioSite, RucioCredentials], Any] | None = None) -> None:
        hosts = {s.rucio_host for s in sites.values()}
        if len(hosts) != 1:
            raise ReplicaError(f"every site's replica connection must name the same Rucio server; got "
                               f"{ {k: s.rucio_host for k, s in sites.items()} }")
        missing = sorted(set(sites) - set(credentials))
        if missing:
            raise ReplicaError(f"no Rucio credentials for sites {missing}")
        self.scope = scope
        self.sites = dict(sites)
        self.campaign = campaign
        self.activity = activity
        self.lifetime = lifetime
        self.hub = hub or next(iter(sites))
        self._credentials = dict(credentials)
        self._client_factory = client_factory or _make_client
        self._clients: dict[str, Any] = {}
        self._butlers: dict[str, SiteButler] = {}
        self._closed_refs: dict[str, list[DatasetRef]] = {}
        self._dtn_urls: dict[str, str] = {}
        self._lock = threading.Lock()
        #: Rucio API calls made, by method name (the tests count the calls per poll).
        self.calls: dict[str, int] = defaultdict(int)

    # -- plumbing ------------------------------------------------------------------------------

    def client(self, site: str) -> Any:
        """The site's Rucio client (its own account and credentials), built once."""
        if site not in self.sites:
            raise ReplicaError(f"site {site!r} has no replica settings; sites: {sorted(self.sites)}")
        with self._lock:
            if site not in self._clients:
                from rucio.common.exception import CannotAuthenticate

                s = self.sites[site]
                what = (f"the login {s.username!r}: check the connection's login and password"
                        if s.auth_type == "userpass" else "the token: it is wrong or has expired")
                refused = f"{site} (connection {s.conn_id or '?'}, account {s.account} at {s.rucio_host}): " \
                          f"Rucio refused {what}"
                # Building a client logs in (one request): it rides out an outage like any call.
                try:
                    client = patiently(lambda: self._client_factory(s, self._credentials[site]),
                                       f"the login of {site}")
                except CannotAuthenticate:
                    raise ReplicaAuthError(refused) from None
                self._clients[site] = _Counted(client, self.calls, refused)
            return self._clients[site]

    def _butler(self, site: str) -> SiteButler:
        from multisite_drp.services.butler import SiteButler

        if site not in self._butlers:
            self._butlers[site] = SiteButler(site, self.sites[site].repo)
        return self._butlers[site]

    def _site_of_rse(self, rse: str) -> str:
        for name, s in self.sites.items():
            if s.rse == rse:
                return name
        raise ReplicaError(f"RSE {rse!r} belongs to no site of this campaign")

    def _layout(self, site: str) -> tuple[str, str]:
        """(rse_root, dtn_url) of a site, checked against its datastore: files must lie in
        ``<rse_root>/<scope>/`` for lsst-rucio-register to name them."""
        s = self.sites[site]
        root = self._butler(site).datastore_root()
        rse_root = s.rse_root
        if rse_root is None:
            if root is None:
                raise ReplicaError(f"{site}: the butler datastore is not a local directory; set 'rse_root' and "
                                   "'dtn_url' in the site's replica connection extras")
            rse_root = str(root.parent)
        rse_root = rse_root.rstrip("/")
        if root is not None and Path(root).resolve() != Path(rse_root).resolve() / self.scope:
            raise ReplicaError(
                f"{site}: the butler datastore is {root}, but the campaign's Rucio scope {self.scope!r} needs it at "
                f"<rse_root>/{self.scope} = {rse_root}/{self.scope} (lsst-rucio-register names DIDs by the path "
                "below <rse_root>/<scope>)")
        if site not in self._dtn_urls:
            self._dtn_urls[site] = (s.dtn_url or self._dtn_url(site)).rstrip("/")
        return rse_root, self._dtn_urls[site]

    def _dtn_url(self, site: str) -> str:
        """The PFN base of the site's RSE root, as Rucio itself computes PFNs there (one call).

        lsst-rucio-register builds ``dtn_url + /<scope>/<name>``; with the RSE's
        ``identity`` lfn2pfn Rucio expects ``<scheme>://<host>[:port]<prefix>/<scope>/<name>``,
        so the base is Rucio's own PFN of a probe name minus ``/<scope>/<name>``.
        """
        rse = self.sites[site].rse
        probe = "multisite-drp-probe"
        pfn = next(iter(self.client(site).lfns2pfns(rse, [f"{self.scope}:{probe}"], operation="write").values()))
        tail = f"/{self.scope}/{probe}"
        if not pfn.endswith(tail):
            raise ReplicaError(f"{site}: RSE {rse} maps {self.scope}:{probe} to {pfn}; lsst-rucio-register needs the "
                               "'identity' lfn2pfn_algorithm (or set 'dtn_url' in the site's replica connection)")
        return pfn.removesuffix(tail)

    def _did(self, name: str) -> dict[str, str]:
        return {"scope": self.scope, "name": name}

    # -- register ------------------------------------------------------------------------------

    def _files(self, site: str, dataset: str) -> list[dict[str, Any]]:
        from rucio.common.exception import DataIdentifierNotFound

        try:
            return list(self.client(site).list_files(self.scope, dataset))
        except DataIdentifierNotFound:
            return []

    def register(self, site: str, dataset: str, refs: Sequence[DatasetRef]) -> RegisteredDataset:
        """Register ``refs`` (files at ``site``'s RSE) into ``dataset``, then close it.

        Files already attached are skipped before any checksum is computed; the rest go
        through lsst-rucio-register (add_replicas, dataset created if missing, attach with
        ``ignore_duplicate``). Attaching to a dataset that is already closed is refused:
        a closed dataset is complete by definition.
        """
        from rucio.common.exception import DataIdentifierNotFound

        rse_root, dtn_url = self._layout(site)
        sb = self._butler(site)
        sb.refresh()
        prefix = f"{rse_root}/{self.scope}/"
        attached = {f["name"] for f in self._files(site, dataset)}
        todo = []
        uris = sb.butler.get_many_uris(list(refs)) if refs else {}
        for ref in refs:
            primary = uris[ref].primaryURI
            if primary is None:
                raise ReplicaError(f"{dataset}: {ref} at {site} is not a single file (disassembled?)")
            path = primary.unquoted_path
            if not path.startswith(prefix):
                raise ReplicaError(f"{dataset}: {path} at {site} lies outside {prefix}")
            if path.removeprefix(prefix) not in attached:
                todo.append(ref)
        client = self.client(site)
        if todo:
            try:
                info = client.get_did(self.scope, dataset)
            except DataIdentifierNotFound:
                info = None
            if info is not None and not info.get("open", True):
                raise ReplicaError(f"{self.scope}:{dataset} is closed but {len(todo)} of its {len(refs)} datasets "
                                   f"at {site} are not in it; a closed Rucio dataset is complete and never grows")
            # Raws are lsst-rucio-register's ``raw_file``s, everything else ``data_product``s;
            # both carry the DatasetRef sidecar.
            for kind in (RAW_FILE, DATA_PRODUCT):
                batch = [r for r in todo if (r.datasetType.name == RAW_DATASET_TYPE) == (kind == RAW_FILE)]
                ri = rubin_interface(sb.butler, self.sites[site], self.scope, rse_root, dtn_url, client, kind)
                for chunk in _chunks(_expanded(sb.butler, batch), CHUNK):
                    ri.register_as_replicas(dataset, chunk)
        info = client.get_did(self.scope, dataset, dynamic_depth="FILE")
        crashpoint("register.before_close")
        if info.get("open", True):
            client.close(self.scope, dataset)
        log.info("registered %s:%s at %s: %d files (%d new), %d bytes", self.scope, dataset, site,
                 info.get("length") or 0, len(todo), info.get("bytes") or 0)
        return RegisteredDataset(name=dataset, site=site, files=int(info.get("length") or 0),
                                 bytes=int(info.get("bytes") or 0), new_files=len(todo))

    # -- rules ---------------------------------------------------------------------------------

    def _rule_ref(self, rule: Mapping[str, Any]) -> RuleRef:
        rse = rule["rse_expression"]
        return RuleRef(rule_id=rule["id"], dataset=rule["name"], site=self._site_of_rse(rse), rse=rse)

    def find_rule(self, dataset: str, site: str) -> RuleRef | None:
        from rucio.common.exception import DataIdentifierNotFound

        rse = self.sites[site].rse
        try:
            rules = [r for r in self.client(site).list_did_rules(self.scope, dataset) if r["rse_expression"] == rse]
        except DataIdentifierNotFound:
            return None
        if not rules:
            return None
        rules.sort(key=lambda r: (_epoch(r.get("created_at")) or 0.0, r["id"]))
        if len(rules) > 1:
            log.warning("%s:%s has %d rules to %s (%s); using the oldest", self.scope, dataset, len(rules), rse,
                        [r["id"] for r in rules])
        return self._rule_ref(rules[0])

    def add_rule(self, dataset: str, site: str) -> RuleRef:
        """The rule for (dataset, site's RSE): found if it exists, else added by the site's account.

        A found rule that is being deleted (:meth:`delete_rule`: Rucio expires it within the
        hour) is kept instead: its lifetime is set back to the campaign's."""
        from rucio.common.exception import DataIdentifierNotFound, DuplicateRule

        found = self.find_rule(dataset, site)
        if found is not None:
            self._revive(found)
            return found
        rse = self.sites[site].rse
        try:
            self.client(site).add_replication_rule(
                dids=[self._did(dataset)], copies=1, rse_expression=rse, grouping="DATASET",
                activity=self.activity, lifetime=self.lifetime,
                comment=f"multisite-drp {self.campaign}: {dataset} to {site}",
            )
        except DuplicateRule:
            pass  # another worker added it between our look and our add: use theirs
        except DataIdentifierNotFound:
            raise ReplicaError(f"cannot add a rule for {self.scope}:{dataset}: no such dataset is registered") from None
        crashpoint("rule.after_add")
        found = self.find_rule(dataset, site)
        if found is None:
            raise ReplicaError(f"the rule for {self.scope}:{dataset} to {rse} was added but cannot be found")
        log.info("rule %s: %s:%s -> %s", found.rule_id, self.scope, dataset, rse)
        return found

    def rule_status(self, rules: Sequence[RuleRef]) -> dict[str, RuleStatus]:
        """One ``list_replication_rules`` call per destination site (scope, account, RSE filters)."""
        out: dict[str, RuleStatus] = {}
        by_site: dict[str, list[RuleRef]] = defaultdict(list)
        for r in rules:
            by_site[r.site].append(r)
        for site, refs in by_site.items():
            s = self.sites[site]
            listed = {r["id"]: r for r in self.client(site).list_replication_rules(
                {"scope": self.scope, "account": s.account, "rse_expression": s.rse})}
            for ref in refs:
                rule = listed.get(ref.rule_id)
                if rule is None:
                    rule = self._get_rule(site, ref.rule_id)  # owned by another account (an operator's)
                out[ref.rule_id] = _status(ref.rule_id, rule)
        return out

    def _get_rule(self, site: str, rule_id: str) -> Mapping[str, Any] | None:
        from rucio.common.exception import RuleNotFound

        try:
            return self.client(site).get_replication_rule(rule_id)
        except RuleNotFound:
            return None

    def retry(self, rule: RuleRef) -> RuleRef:
        """Hand a STUCK rule back to Rucio's judge-repairer, as an operator would.

        ``boost_rule`` makes the repairer take the rule at its next pass instead of after
        its usual delay; the repairer re-queues the failed transfers. The rule stays the
        same rule: nothing is added.
        """
        status = self.rule_status([rule])[rule.rule_id]
        if status.state is RuleState.STUCK and status.error != "no such rule":
            log.info("rule %s (%s to %s) is STUCK (%s): boosting it for the judge-repairer", rule.rule_id,
                     rule.dataset, rule.rse, status.error)
            self.client(rule.site).update_replication_rule(rule.rule_id, {"boost_rule": True})
        return rule

    def _revive(self, rule: RuleRef) -> None:
        """Give a rule that is being deleted its campaign lifetime back (one call if it is not)."""
        info = self._get_rule(rule.site, rule.rule_id)
        expires, created = _epoch((info or {}).get("expires_at")), _epoch((info or {}).get("created_at"))
        if expires is None or (self.lifetime is not None and created is not None
                               and expires >= created + self.lifetime - 60):
            return
        log.info("rule %s (%s to %s) was being deleted: kept, lifetime %s", rule.rule_id, rule.dataset, rule.rse,
                 self.lifetime)
        self.client(rule.site).update_replication_rule(rule.rule_id, {"lifetime": self.lifetime})

    def delete_rule(self, rule: RuleRef) -> None:
        """Delete the rule (by the destination site's account), as Rucio's API does: a soft
        deletion, the rule expires within the hour and the judge-cleaner removes it; its
        replicas are left to Rucio's deletion daemon (``purge_replicas`` False). A rule
        already gone is no error; ``add_rule`` keeps a rule that is being deleted."""
        from rucio.common.exception import RuleNotFound

        try:
            self.client(rule.site).delete_replication_rule(rule.rule_id, purge_replicas=False)
        except RuleNotFound:
            return
        log.info("rule %s (%s to %s) deleted", rule.rule_id, rule.dataset, rule.rse)

    def check(self) -> dict[str, str]:
        """Log in as every site (``whoami``), find its RSE and the campaign's scope, and check
        that its datastore lies where lsst-rucio-register will name its files.

        What the validate task runs before any external action: a wrong password, a
        missing RSE or scope fails here, naming the site and its connection, never
        showing the password.
        """
        from rucio.common.exception import RSENotFound

        out = {}
        for site, s in self.sites.items():
            where = f"{site} (connection {s.conn_id or '?'}, account {s.account} at {s.rucio_host})"
            client = self.client(site)  # logs in, or says whose login was refused
            who = client.whoami()
            try:
                client.get_rse(s.rse)
            except RSENotFound:
                raise ReplicaError(f"{where}: Rucio has no RSE {s.rse!r} (the campaign's sites[{site}].rse)") from None
            self._layout(site)  # the datastore lies at <rse_root>/<scope>, or say where it should
            out[site] = who.get("account", s.account)
        if self.scope not in set(self.client(self.hub).list_scopes()):
            raise ReplicaError(f"Rucio at {self.sites[self.hub].rucio_host} has no scope {self.scope!r} "
                               "(the campaign's replication.scope)")
        return out

    # -- what a dataset holds ------------------------------------------------------------------

    def _sidecars(self, site: str, dataset: str) -> list[str]:
        client = self.client(site)
        names = sorted(f["name"] for f in self._files(site, dataset))
        out = []
        for chunk in _chunks(names, CHUNK):
            for meta in client.get_metadata_bulk([self._did(n) for n in chunk], plugin="JSON"):
                if meta.get("rubin_butler") in (DATA_PRODUCT, RAW_FILE) and meta.get("rubin_sidecar"):
                    out.append(meta["rubin_sidecar"])
        return out

    def dataset_refs(self, dataset: str) -> list[DatasetRef]:
        """The butler datasets of ``dataset``, from the sidecars. A closed dataset never
        changes, so its refs are kept: a wait polling ``verify_ingested`` lists it once."""
        from lsst.daf.butler import DatasetRef

        if dataset in self._closed_refs:
            return self._closed_refs[dataset]
        closed = not self.client(self.hub).get_did(self.scope, dataset).get("open", True)
        universe = self._butler(self.hub).butler.dimensions
        refs = [DatasetRef.from_json(s, universe=universe) for s in self._sidecars(self.hub, dataset)]
        if closed:
            self._closed_refs[dataset] = refs
        return refs

    def verify_ingested(self, rule: RuleRef) -> IngestCheck:
        from multisite_drp.services.butler import SiteButler

        refs = self.dataset_refs(rule.dataset)
        dest = SiteButler(rule.site, self.sites[rule.site].repo, writeable=False)
        missing = dest.missing(refs)
        return IngestCheck(dataset=rule.dataset, site=rule.site, expected=len(refs), found=len(refs) - len(missing))

    # -- catalogue views (report, tests) -------------------------------------------------------

    def dataset_summary(self, dataset: str) -> dict[str, int]:
        info = self.client(self.hub).get_did(self.scope, dataset, dynamic_depth="FILE")
        return {"files": int(info.get("length") or 0), "bytes": int(info.get("bytes") or 0)}

    def list_datasets(self, prefix: str = "") -> list[str]:
        return sorted(self.client(self.hub).list_dids(self.scope, {"name": prefix + "*"}, did_type="dataset"))

    def list_rules(self) -> list[dict[str, Any]]:
        """Every rule in the campaign's scope (any account), oldest first."""
        rules = list(self.client(self.hub).list_replication_rules({"scope": self.scope}))
        rows = [{"rule_id": r["id"], "dataset": r["name"], "rse": r["rse_expression"], "state": r["state"],
                 "account": r["account"], "created": _epoch(r.get("created_at"))} for r in rules]
        return sorted(rows, key=lambda r: (r["created"] or 0.0, r["rule_id"]))


def _status(rule_id: str, rule: Mapping[str, Any] | None) -> RuleStatus:
    if rule is None:
        return RuleStatus(rule_id, RuleState.STUCK, error="no such rule")
    state = rule["state"]
    state = RuleState(state if isinstance(state, str) else state.name)
    return RuleStatus(
        rule_id=rule_id, state=state, locks_ok=int(rule.get("locks_ok_cnt") or 0),
        locks_replicating=int(rule.get("locks_replicating_cnt") or 0),
        locks_stuck=int(rule.get("locks_stuck_cnt") or 0), bytes=int(rule.get("bytes") or 0),
        error=rule.get("error") or "", created=_epoch(rule.get("created_at")),
        updated=_epoch(rule.get("updated_at")),
    )


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i: i + n]


def _expanded(butler: Butler, refs: Sequence[DatasetRef]) -> list[DatasetRef]:
    """``refs`` with their data IDs' dimension records, so each sidecar carries what the
    destination registry must hold before the dataset can be ingested."""
    cache: dict[Any, Any] = {}
    out = []
    for ref in refs:
        if ref.dataId.hasRecords():
            out.append(ref)
            continue
        key = ref.dataId.required_values, ref.dataId.dimensions
        if key not in cache:
            cache[key] = butler.registry.expandDataId(ref.dataId)
        out.append(ref.expanded(cache[key]))
    return out


class _Counted:
    """A Rucio client whose public calls are counted and ride out a server outage.

    A call that cannot reach the server (connection refused or reset, timeout, a 5xx the
    client gave up on) is tried again with exponential back-off for up to
    ``outage_seconds``, with a warning each time, then the error is raised. Every Rucio
    call this package makes is safe to repeat: adds find what exists (replicas, attached
    files) or raise Duplicate (rules, which ``add_rule`` then finds).
    """

    def __init__(self, client: Any, calls: dict[str, int], refused: str = "Rucio refused the credentials",
                 outage_seconds: float = OUTAGE_SECONDS) -> None:
        self._client = client
        self._calls = calls
        self._refused = refused
        self._outage = outage_seconds

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            def call() -> Any:
                self._calls[name] += 1
                result = attr(*args, **kwargs)
                # Listings are generators that reach the server when iterated: fetch now.
                return list(result) if isinstance(result, Iterator) else result

            from rucio.common.exception import CannotAuthenticate

            try:
                return patiently(call, name, self._outage)
            except CannotAuthenticate:  # a token that expired, a password changed under us
                raise ReplicaAuthError(self._refused) from None

        return counted


def patiently(call: Callable[[], Any], what: str, outage_seconds: float = OUTAGE_SECONDS) -> Any:
    """``call()``, tried again with exponential back-off while the Rucio server cannot be
    reached, for up to ``outage_seconds``; then ``ReplicaUnavailableError`` (a ``TransientError``:
    the task is retried with backoff) is raised from it."""
    deadline = time.monotonic() + outage_seconds
    delay = 1.0
    while True:
        try:
            return call()
        except _unreachable() as exc:
            if time.monotonic() + delay > deadline:
                raise ReplicaUnavailableError(f"Rucio unreachable in {what} for {outage_seconds:.0f} s "
                                              f"({type(exc).__name__}: {exc})") from exc
            log.warning("Rucio unreachable in %s (%s: %s); trying again in %.0f s", what, type(exc).__name__, exc,
                        delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def _unreachable() -> tuple[type[BaseException], ...]:
    import requests
    from rucio.common.exception import DatabaseException, ServerConnectionException

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ServerConnectionException,
            DatabaseException)


def _make_client(site: RucioSite, creds: RucioCredentials) -> Any:
    """A rucio-clients ``Client`` for one site's identity, from its Connection alone.

    rucio-clients caches auth tokens in ``$TMPDIR/.rucio_<user>/`` by account name only,
    so any process on the worker would reuse a token another process got, whatever
    password it holds, and two Rucio servers' accounts of the same name would share one.
    Each client here keeps its token in a private directory of its own (0700, removed
    with the client): it authenticates with its own credentials, once per client.

    ``auth_type`` ``userpass``: login and password. ``token``: a Rucio auth token (the
    connection's password field) is placed where the client reads its cached token, so it
    is used as is; once it expires the server refuses it and the task fails saying so.
    """
    import getpass
    import os
    import shutil
    import tempfile
    import weakref

    from rucio.client import Client

    if site.auth_type not in ("userpass", "token"):
        raise ReplicaError(f"{site.conn_id or site.site}: auth_type {site.auth_type!r} is not supported; "
                           "expected 'userpass' or 'token'")
    token_dir = tempfile.mkdtemp(prefix="multisite-drp-rucio-")
    client_class = type("SiteRucioClient", (Client,), {"TOKEN_PATH_PREFIX": token_dir + "/.rucio_"})
    password = creds.password
    if site.auth_type == "token":
        cache = Path(token_dir) / f".rucio_{getpass.getuser()}"
        cache.mkdir(mode=0o700)
        fd = os.open(cache / f"auth_token_for_account_{site.account}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(creds.password)
        password = ""  # nothing to log in with: the token is all this client has
    kwargs: dict[str, Any] = {}
    if site.ca_cert:
        kwargs["ca_cert"] = site.ca_cert
    client = client_class(rucio_host=site.rucio_host, auth_host=site.auth_host, account=site.account,
                          auth_type="userpass", creds={"username": site.username, "password": password},
                          timeout=60, **kwargs)
    weakref.finalize(client, shutil.rmtree, token_dir, True)
    return client
