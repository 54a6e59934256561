"""The production command runner: one Kubernetes pod per stack command, in the site's cluster.

The adapter behind the command-runner port (``services.commands.base``) for a site whose
campaign entry names a ``commands`` connection of adapter ``kubernetes``. It lives in the
Airflow glue because it uses the cncf-kubernetes provider, never hand-written API calls:

* the pod is rendered by the ``KubernetesPodOperator``'s own request builder
  (``build_pod_request_obj``), from the site's connection (image, namespace, service
  account, resources per command kind, node selector, tolerations, volumes and mounts,
  Secrets as ``secretKeyRef`` env or mounted volumes, labels) and the command's spec (argv,
  name, kind, time limit); :func:`render_pod` is that, with no cluster involved;
* the cluster is reached through the provider's ``KubernetesHook`` (the same connection: its
  ``in_cluster`` / ``kube_config_path`` / ``kube_config`` / ``cluster_context`` fields) and
  its ``PodManager`` (create, read, logs, delete);
* the container's command is the connection's ``entrypoint`` (default dumb-init) and its
  ``args`` the command's argv, exactly as the embedded adapter would run it: no shell;
* the pod's name is ``campaign.names.pod_name(spec.name)``: DNS-1123, at most 63
  characters, a hash suffix. A retried task's ``start`` reads the pod of that name and
  finds its predecessor (running or succeeded) instead of starting a second one; a failed
  predecessor is deleted and replaced (its log tail kept in the spec's log file first).
  Labels carry the site, campaign, kind and pod name, so ``status`` lists a whole site's
  commands in one call per namespace, however many groups it follows.

The trigger (``triggers.commands.CommandTrigger``) carries connection ids and refs, never
the kube config; it rebuilds this service in the triggerer through ``CampaignHook``.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from multisite_drp.campaign import names
from multisite_drp.services.commands.base import (
    LOG_TAIL_LINES,
    CommandConflictError,
    CommandError,
    CommandRef,
    CommandResult,
    CommandService,
    CommandSpec,
    CommandState,
)
from multisite_drp.services.commands.pod_settings import PodSettings, PodSettingsError, argv_paths
from multisite_drp.services.procs import is_secret_name, is_secret_value

__all__ = ["CONTAINER", "LABEL_PREFIX", "PodCommandService", "pod_state", "render_pod"]

log = logging.getLogger(__name__)

#: The container's name in every command pod (the KubernetesPodOperator's ``base``).
CONTAINER = "base"
LABEL_PREFIX = "multisite-drp.lsst.io"
L_SITE, L_CAMPAIGN, L_KIND, L_POD = (f"{LABEL_PREFIX}/{k}" for k in ("site", "campaign", "kind", "command"))
A_NAME, A_DIGEST, A_ATTEMPT, A_LOG = (f"{LABEL_PREFIX}/{k}" for k in ("name", "argv-sha256", "attempt", "log-path"))


def _label_value(value: str) -> str:
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    return make_safe_label_value(str(value))


def _check_spec(settings: PodSettings, spec: CommandSpec, where: str) -> None:
    """Refuse, before anything reaches the cluster, a command the pod could not run as asked:
    a path the pod does not mount, a credential in its environment."""
    missing = settings.uncovered(argv_paths(spec.argv)) + settings.uncovered(
        [spec.log_path] if spec.log_path.startswith("/") else [])
    if missing:
        raise PodSettingsError(
            f"{where}: command {spec.name} names {missing}, which no volume mount of extra field "
            f"'volume_mounts' holds (mounts: {[m.mount_path for m in settings.volume_mounts]}); expected the "
            "site's butler repository, the campaign's work directory and the pipeline under a mount")
    for k, v in spec.env.items():
        if is_secret_name(k) or is_secret_value(str(v)):
            raise CommandError(f"command {spec.name}: env variable {k!r} names or carries a credential; "
                               "a pod gets secrets from Kubernetes Secrets (the connection's 'secrets')")


def render_pod(settings: PodSettings, spec: CommandSpec, *, conn_id: str, campaign: str, attempt: int = 1,
               where: str = "", startup: bool = False):
    """The ``V1Pod`` of one command, built by the ``KubernetesPodOperator``'s own
    ``build_pod_request_obj`` (``dry_run``: no cluster, no kube config read)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    _check_spec(settings, spec, where or conn_id)
    pod = names.pod_name(spec.name)
    res = settings.resources_for(spec.kind).model_dump(exclude_none=True)
    if spec.resources is not None:
        res.update(spec.resources.to_dict())
    requests = {k8s_key: res[key] for key, k8s_key in (("cpu", "cpu"), ("memory", "memory"),
                                                         ("ephemeral_storage", "ephemeral-storage")) if key in res}
    limits = {k8s_key: res[key] for key, k8s_key in (("cpu_limit", "cpu"), ("memory_limit", "memory"))
              if key in res}
    labels = {**settings.labels, L_SITE: _label_value(spec.site), L_CAMPAIGN: _label_value(campaign),
              L_KIND: _label_value(spec.kind), L_POD: pod}
    labels.update({f"{LABEL_PREFIX}/{k}": _label_value(v) for k, v in spec.labels.items()
                   if k in ("step", "generation", "group")})
    annotations = {**settings.annotations, A_NAME: spec.name, A_DIGEST: spec.argv_digest,
                   A_ATTEMPT: str(attempt), A_LOG: spec.log_path}
    volumes = []
    for v in settings.volumes:
        src: dict[str, Any] = {}
        if v.persistent_volume_claim:
            src["persistent_volume_claim"] = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=v.persistent_volume_claim)
        elif v.host_path:
            src["host_path"] = k8s.V1HostPathVolumeSource(path=v.host_path, type="Directory")
        elif v.nfs:
            src["nfs"] = k8s.V1NFSVolumeSource(server=v.nfs.server, path=v.nfs.path, read_only=v.nfs.read_only)
        elif v.config_map:
            src["config_map"] = k8s.V1ConfigMapVolumeSource(name=v.config_map)
        volumes.append(k8s.V1Volume(name=v.name, **src))
    mounts = [k8s.V1VolumeMount(name=m.name, mount_path=m.mount_path, read_only=m.read_only, sub_path=m.sub_path)
              for m in settings.volume_mounts]
    secrets = [Secret("env", s.env, s.secret, s.key) if s.env else Secret("volume", s.mount_path, s.secret)
               for s in settings.secrets]
    env = {**settings.env, **{k: str(v) for k, v in spec.env.items()}}
    op = KubernetesPodOperator(
        task_id=f"command-{pod}",
        kubernetes_conn_id=conn_id,
        name=pod,
        random_name_suffix=False,
        namespace=settings.namespace,
        image=settings.image,
        image_pull_policy=settings.image_pull_policy,
        image_pull_secrets=[k8s.V1LocalObjectReference(name=n) for n in settings.image_pull_secrets] or None,
        service_account_name=settings.service_account,
        cmds=list(settings.entrypoint),
        arguments=list(spec.argv),
        env_vars=env or None,
        secrets=secrets,
        labels=labels,
        annotations=annotations,
        container_resources=k8s.V1ResourceRequirements(requests=requests or None, limits=limits or None),
        node_selector=dict(settings.node_selector) or None,
        tolerations=[k8s.V1Toleration(**t.model_dump(exclude_none=True)) for t in settings.tolerations] or None,
        priority_class_name=settings.priority_class_name,
        volumes=volumes,
        volume_mounts=mounts,
        active_deadline_seconds=int(spec.timeout) if spec.timeout else None,
        startup_timeout_seconds=settings.startup_timeout_seconds,
        do_xcom_push=False,
        on_finish_action="keep_pod",
    )
    return op.build_pod_request_obj(dry_run=True)


def pod_state(pod) -> tuple[CommandState, str]:
    """A pod's state for the port, and why (``V1Pod``; None: no such pod)."""
    from airflow.providers.cncf.kubernetes.utils.pod_manager import detect_pod_terminate_early_issues

    if pod is None:
        return CommandState.MISSING, ""
    phase = (pod.status.phase if pod.status else None) or "Pending"
    if phase == "Pending":
        issue = detect_pod_terminate_early_issues(pod) if pod.status else None
        return (CommandState.FAILED, issue) if issue else (CommandState.PENDING, "")
    if phase == "Running":
        return CommandState.RUNNING, ""
    if phase == "Succeeded":
        return CommandState.SUCCEEDED, ""
    if phase == "Failed":
        reason = pod.status.reason or ""
        return CommandState.FAILED, ("timed out (activeDeadlineSeconds)" if reason == "DeadlineExceeded" else reason)
    return CommandState.LOST, f"pod phase {phase}: its node is unreachable"


def _exit_code(pod) -> int | None:
    for cs in (pod.status.container_statuses or []) if pod is not None and pod.status else []:
        if cs.name == CONTAINER and cs.state and cs.state.terminated:
            return cs.state.terminated.exit_code
    return None


class PodCommandService(CommandService):
    """One site's commands as pods. ``settings``: ``services.factory.command_settings``'s
    (adapter ``kubernetes``); the cluster credentials stay in the connection, which the
    provider's ``KubernetesHook`` reads (``conn_id``)."""

    wait_interval = 10.0

    def __init__(self, settings: Mapping[str, Any], hook: Any | None = None) -> None:
        self.site = settings["site"]
        self.campaign = settings["campaign"]
        self.conn_id = settings["conn_id"]
        self.where = settings.get("where", self.conn_id)
        self.pods = PodSettings.model_validate(settings["pods"])
        self.namespace = self.pods.namespace
        self._hook = hook
        self.wait_interval = min(self.pods.poll_interval, 30.0)

    # -- the provider ----------------------------------------------------------------------------

    @functools.cached_property
    def hook(self):
        if self._hook is not None:
            return self._hook
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.conn_id)

    @functools.cached_property
    def manager(self):
        from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager

        return PodManager(self.hook.core_v1_client)

    def render(self, spec: CommandSpec, attempt: int = 1):
        return render_pod(self.pods, spec, conn_id=self.conn_id, campaign=self.campaign, attempt=attempt,
                          where=self.where)

    def _read(self, pod_name: str):
        from kubernetes.client.exceptions import ApiException

        try:
            return self.hook.get_pod(pod_name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _ref(self, spec_or_pod: Any, attempt: int, found: bool, spec: CommandSpec) -> CommandRef:
        return CommandRef(name=spec.name, site=spec.site, kind=spec.kind,
                          handle=f"{self.namespace}/{names.pod_name(spec.name)}", log_path=spec.log_path,
                          attempt=attempt, found=found)

    def _same(self, spec: CommandSpec, pod) -> int:
        ann = pod.metadata.annotations or {}
        if ann.get(A_DIGEST) != spec.argv_digest:
            raise CommandConflictError(
                f"command {spec.name}: pod {self.namespace}/{pod.metadata.name} runs another argv (sha256 "
                f"{ann.get(A_DIGEST)}) than the one asked for ({spec.argv_digest}); a command name must always mean "
                "the same command (was the campaign file changed without a new generation?)")
        return int(ann.get(A_ATTEMPT, "1"))

    # -- port ------------------------------------------------------------------------------------

    def find(self, spec: CommandSpec) -> CommandRef | None:
        pod = self._read(names.pod_name(spec.name))
        if pod is None:
            return None
        return self._ref(pod, self._same(spec, pod), True, spec)

    def start(self, spec: CommandSpec) -> CommandRef:
        from kubernetes.client.exceptions import ApiException

        if spec.site != self.site:
            raise CommandError(f"command {spec.name} is for site {spec.site}, this runner serves {self.site}")
        if spec.lock:
            raise CommandError(f"command {spec.name} must hold the file lock {spec.lock} for its life, which a pod "
                               "cannot do on the worker's disk: a site whose commands run in pods needs a "
                               "database-backed butler (its writers need no file lock)")
        body = self.render(spec)  # validated before the cluster is asked anything
        existing = self._read(body.metadata.name)
        attempt = 1
        if existing is not None:
            attempt = self._same(spec, existing)
            state, why = pod_state(existing)
            if state not in (CommandState.FAILED, CommandState.LOST):
                return self._ref(existing, attempt, True, spec)
            log.warning("%s: pod %s ended %s (%s); replacing it with attempt %d", spec.name, body.metadata.name,
                        state.value, why, attempt + 1)
            self._keep_log(existing, spec.log_path)
            self._delete(existing, spec.name)
            attempt += 1
            body = self.render(spec, attempt)
        try:
            self.manager.create_pod(body)
        except ApiException as exc:
            if exc.status != 409:  # 409: a concurrent start made it first: that one is ours
                raise
            return self._ref(None, attempt, True, spec)
        return self._ref(None, attempt, False, spec)

    def status(self, refs: Sequence[CommandRef]) -> dict[str, CommandState]:
        """One list call per namespace for all of this site's commands of the campaign."""
        if not refs:
            return {}
        selector = f"{L_SITE}={_label_value(self.site)},{L_CAMPAIGN}={_label_value(self.campaign)}"
        pods = self.hook.core_v1_client.list_namespaced_pod(namespace=self.namespace, label_selector=selector).items
        by_name = {p.metadata.name: p for p in pods}
        return {r.name: pod_state(by_name.get(names.pod_name(r.name)))[0] for r in refs}

    def _tail(self, pod) -> str:
        try:
            lines = [ln.decode(errors="replace").rstrip("\n") if isinstance(ln, bytes) else str(ln)
                     for ln in self.manager.read_pod_logs(pod, CONTAINER, tail_lines=LOG_TAIL_LINES, follow=False)]
        except Exception as exc:  # noqa: BLE001 - logs gone with the node: say so, the state still stands
            return f"<could not read the pod's log: {type(exc).__name__}: {exc}>"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _keep_log(self, pod, log_path: str) -> None:
        """Append the pod's log tail to the command's log file, when this process can reach it."""
        path = Path(log_path)
        if path.parent.is_dir():
            with path.open("a") as fh:
                fh.write(f"--- pod {pod.metadata.namespace}/{pod.metadata.name} (last {LOG_TAIL_LINES} lines) ---\n"
                         f"{self._tail(pod)}\n")

    def result(self, ref: CommandRef) -> CommandResult:
        pod = self._read(ref.handle.split("/", 1)[1])
        state, why = pod_state(pod)
        if pod is None:
            return CommandResult(state, None, "", f"command {ref.name}: no pod {ref.handle}")
        tail = self._tail(pod) if state.terminal else ""
        code = _exit_code(pod)
        if state.terminal:
            self._keep_log(pod, ref.log_path)
            if state is CommandState.SUCCEEDED and self.pods.on_finish == "delete_succeeded":
                self.manager.delete_pod(pod)
        message = f"command {ref.name} (pod {ref.handle}) {why}".strip() if why else ""
        return CommandResult(state, code, tail, message)

    def _delete(self, pod, name: str) -> None:
        """Delete a pod and wait until it is gone (a new one of its name can then be created)."""
        self.manager.delete_pod(pod)
        deadline = time.monotonic() + 120
        while self._read(pod.metadata.name) is not None:
            if time.monotonic() > deadline:
                raise CommandError(f"{name}: pod {pod.metadata.name} still terminating after 120 s")
            time.sleep(1)

    def discard(self, ref: CommandRef) -> None:
        """A succeeded pod deleted (its log tail kept in the command's log first): the next
        ``start`` creates the command's pod again."""
        pod = self._read(ref.handle.split("/", 1)[1])
        if pod is not None and pod_state(pod)[0] is CommandState.SUCCEEDED:
            self._keep_log(pod, ref.log_path)
            self._delete(pod, ref.name)

    def cancel(self, ref: CommandRef) -> None:
        pod = self._read(ref.handle.split("/", 1)[1])
        if pod is not None and not pod_state(pod)[0].terminal:
            self.manager.delete_pod(pod)


def rendered_json(pod) -> str:
    """A rendered pod as the JSON the API server would receive (what tests and ``dry_run`` read)."""
    from kubernetes.client import ApiClient

    return json.dumps(ApiClient().sanitize_for_serialization(pod), sort_keys=True)
