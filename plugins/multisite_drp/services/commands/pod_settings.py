"""Settings of a site's ``kubernetes`` commands connection, validated (pydantic), no secret kept.

The connection is the cncf-kubernetes provider's own (conn_type ``kubernetes``): its
``KubernetesHook`` reads the cluster fields (``in_cluster``, ``kube_config_path``,
``kube_config``, ``cluster_context``, ``disable_verify_ssl``, ``disable_tcp_keepalive``...)
and this module never keeps them (``kube_config`` is a credential). The project's fields
describe the pods:

* ``adapter: kubernetes``; ``image`` (required), ``image_pull_policy``, ``image_pull_secrets``;
* ``namespace`` (also the provider's field; default ``default``), ``service_account``;
* ``entrypoint``: the container's command before the argv (default ``["/usr/bin/dumb-init",
  "--"]``, which the official Airflow image has: it bypasses the image's ``/entrypoint``,
  which would run any argument as ``airflow ...``, and forwards signals to the whole tree);
  the container's ``args`` are the command's argv, exactly;
* ``resources``: per command kind (``qgraph``, ``merge``, ``register``) and ``default``,
  each ``{cpu, memory, cpu_limit, memory_limit, ephemeral_storage}`` (Kubernetes quantities);
* ``node_selector``, ``tolerations``, ``priority_class_name``;
* ``volumes`` (``{name, persistent_volume_claim | host_path | nfs | config_map}``) and
  ``volume_mounts`` (``{name, mount_path, read_only, sub_path}``): every absolute path a
  command names (repository, graph, log, configs) must lie under a mount, or under one of
  ``image_paths`` (directories the image itself holds, e.g. ``/opt/airflow/include`` for
  the pipelines baked into the project's image);
* ``secrets``: Kubernetes Secrets by name, each either an environment variable filled from
  one key (``{secret, key, env}``: a ``secretKeyRef``, the value never in the pod spec) or a
  mounted volume (``{secret, mount_path}``); never a value;
* ``env``: plain settings (paths, switches) for the commands; a name or value that looks
  like a credential is refused (``procs.is_secret_name`` / ``is_secret_value``);
* ``labels``, ``annotations`` added to every pod; ``poll_interval`` (seconds between a
  trigger's status calls, default 30), ``startup_timeout_seconds`` (default 600),
  ``on_finish`` (``keep_pod``, the default, keeps a finished pod for its logs and for a
  retried task to find; ``delete_succeeded`` deletes a successful one once its result is read).

An unknown field is refused naming the connection and the field. No Airflow imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from multisite_drp.errors import InputError
from multisite_drp.services.procs import is_secret_name, is_secret_value

__all__ = ["PROVIDER_FIELDS", "PodSettings", "PodSettingsError", "argv_paths", "pod_settings"]

#: Extras the provider's KubernetesHook reads from the same connection (kept out of the settings).
PROVIDER_FIELDS = ("in_cluster", "kube_config_path", "kube_config", "cluster_context", "disable_verify_ssl",
                   "disable_tcp_keepalive", "xcom_sidecar_container_image", "xcom_sidecar_container_resources")

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
Quantity = Annotated[str, StringConstraints(pattern=_QUANTITY)]
Dns1123 = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
SecretName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]
AbsPath = Annotated[str, StringConstraints(pattern=r"^/[^\x00-\x1f$]*$", max_length=4096)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
LabelKey = Annotated[str, StringConstraints(pattern=r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
LabelValue = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")]


class PodSettingsError(InputError, ValueError):
    """A kubernetes commands connection is wrong; the message names the connection and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PodResources(_Strict):
    cpu: Quantity | None = None
    memory: Quantity | None = None
    cpu_limit: Quantity | None = None
    memory_limit: Quantity | None = None
    ephemeral_storage: Quantity | None = None


class Toleration(_Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class NfsSource(_Strict):
    server: str = Field(min_length=1)
    path: AbsPath
    read_only: bool = False


class Volume(_Strict):
    """One pod volume: exactly one source."""

    name: Dns1123
    persistent_volume_claim: Dns1123 | None = None
    host_path: AbsPath | None = None
    nfs: NfsSource | None = None
    config_map: Dns1123 | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        given = [k for k in ("persistent_volume_claim", "host_path", "nfs", "config_map") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"volume {self.name!r}: expected exactly one of persistent_volume_claim, host_path, "
                             f"nfs, config_map; got {given or 'none'} (a Secret goes under 'secrets')")
        return self


class VolumeMount(_Strict):
    name: Dns1123
    mount_path: AbsPath
    read_only: bool = False
    sub_path: str | None = None


class SecretRef(_Strict):
    """A Kubernetes Secret by name: one key as an environment variable (``env`` and ``key``:
    a ``secretKeyRef``) or the whole Secret as files (``mount_path``). Never its value."""

    secret: SecretName
    key: str | None = None
    env: EnvName | None = None
    mount_path: AbsPath | None = None

    @model_validator(mode="after")
    def _one_way(self) -> SecretRef:
        as_env = self.env is not None
        if as_env == (self.mount_path is not None):
            raise ValueError(f"secret {self.secret!r}: expected either 'env' with 'key' (an environment variable "
                             "from one key) or 'mount_path' (the Secret as files), not both or neither")
        if as_env and not self.key:
            raise ValueError(f"secret {self.secret!r}: 'env' needs the Secret's 'key' to read")
        return self


class PodSettings(_Strict):
    """What every pod of a site is made of (see the module docstring)."""

    adapter: Literal["kubernetes"]
    image: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}$")]
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[SecretName] = Field(default_factory=list)
    namespace: Dns1123 = "default"
    service_account: Dns1123 | None = None
    entrypoint: list[str] = Field(default_factory=lambda: ["/usr/bin/dumb-init", "--"], min_length=1)
    resources: dict[Literal["default", "qgraph", "merge", "register"], PodResources] = Field(default_factory=dict)
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class_name: Dns1123 | None = None
    volumes: list[Volume] = Field(default_factory=list)
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    image_paths: list[AbsPath] = Field(default_factory=list)
    secrets: list[SecretRef] = Field(default_factory=list)
    env: dict[EnvName, str] = Field(default_factory=dict)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    poll_interval: float = Field(default=30.0, ge=0.1, le=3600)
    startup_timeout_seconds: int = Field(default=600, ge=1, le=86400)
    on_finish: Literal["keep_pod", "delete_succeeded"] = "keep_pod"

    @field_validator("env")
    @classmethod
    def _no_secret_env(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():
            if is_secret_name(k) or is_secret_value(v):
                raise ValueError(f"variable {k!r} names or carries a credential; put it in a Kubernetes Secret and "
                                 "name it under 'secrets' (as env with a key, or mounted)")
        return value

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> PodSettings:
        names = [v.name for v in self.volumes]
        if len(set(names)) != len(names):
            raise ValueError(f"volumes: names must be unique, got {names}")
        for m in self.volume_mounts:
            if m.name not in names:
                raise ValueError(f"volume_mounts: {m.name!r} names no volume (volumes: {names})")
        envs = [s.env for s in self.secrets if s.env] + list(self.env)
        if len(set(envs)) != len(envs):
            raise ValueError(f"env and secrets: each environment variable once, got {envs}")
        return self

    def resources_for(self, kind: str) -> PodResources:
        """The kind's resources over the ``default`` ones."""
        base = self.resources.get("default", PodResources()).model_dump(exclude_none=True)
        return PodResources(**{**base, **self.resources.get(kind, PodResources()).model_dump(exclude_none=True)})

    def mount_paths(self) -> list[str]:
        return [m.mount_path for m in self.volume_mounts] + [s.mount_path for s in self.secrets if s.mount_path]

    def uncovered(self, paths: list[str]) -> list[str]:
        """The absolute paths among ``paths`` that no volume mount holds."""
        mounts = [m.rstrip("/") + "/" for m in [*(v.mount_path for v in self.volume_mounts), *self.image_paths]]
        return [p for p in paths if not any((p.rstrip("/") + "/").startswith(m) for m in mounts)]


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pod_settings(extra: Mapping[str, Any], where: str) -> PodSettings:
    """Validate a commands connection's extras (the provider's own fields set aside):
    :class:`PodSettingsError` names ``where`` (the campaign file, site and connection) and
    the field."""
    ours = {k: v for k, v in extra.items()
            if k not in PROVIDER_FIELDS and not k.startswith("extra__kubernetes__")}
    try:
        return PodSettings.model_validate(ours)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = _field(err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown extra field {name!r}")
            elif err["type"] == "missing":
                problems.append(f"extra field {name!r} is missing")
            else:
                shown = repr(err.get("input"))[:80] if name not in ("", "env") else ""
                problems.append(f"extra field {name!r}{' is ' + shown if shown else ''}: {err['msg']}")
        allowed = sorted(PodSettings.model_fields) + ["(the provider's) " + ", ".join(PROVIDER_FIELDS)]
        raise PodSettingsError(f"{where}: " + "; ".join(problems) +
                               f". A kubernetes commands connection takes {allowed}") from None


def argv_paths(argv: list[str] | tuple[str, ...]) -> list[str]:
    """Absolute local paths an argv names (a whole argument, or the value after ``=``; a
    pipeline's ``#subset`` cut off), the executable excluded; URIs (``s3://``) are not paths."""
    out = set()
    for a in argv[1:]:
        value = a.split("=", 1)[1] if "=" in a and not a.startswith("/") else a
        if value.startswith("/"):
            out.add(value.split("#", 1)[0])
    return sorted(out)
