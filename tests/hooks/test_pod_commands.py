"""The production command runner's pods, rendered by the cncf-kubernetes provider's own builder.

NO KUBERNETES CLUSTER IS INVOLVED: no API server runs on these machines. Each pod is
rendered by ``KubernetesPodOperator.build_pod_request_obj(dry_run=True)`` (through
``hooks.pods.render_pod``, exactly what ``PodCommandService.start`` sends to the cluster)
and its serialised JSON (what the API server would receive) is checked: for every site
of the production-shaped campaign (``include/campaigns/drp_production.yaml``) and every
command kind (graph build, merge, registration), the image, the container's argv (the
one the embedded adapter runs, no shell), resources, mounts, labels and name
determinism, and that a recognisable fake secret put in the connection (its kube config,
and a Secret's *name*) never appears as a value in the pod's env or args. The pod state
mapping is checked on provider ``V1Pod`` objects built here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from multisite_drp.campaign import names
from multisite_drp.campaign.config import load_campaign
from multisite_drp.services import factory, middleware
from multisite_drp.services.commands.base import CommandSpec, CommandState, Resources
from multisite_drp.services.commands.pod_settings import PodSettingsError, pod_settings
from multisite_drp.services.factory import ConnectionInfo

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "include" / "campaigns" / "drp_production.yaml"
FAKE_SECRET = "FAKE-SECRET-7f3a9c-do-not-leak"
#: Where each site's butler repository lives (the campaign file's butler_repo), to mount it.
REPO_ROOTS = {"usdf": None, "frdf": "/sps/lsst/butler", "ukdf": "/gpfs/lsst/butler"}


def _extra(site: str) -> dict:
    mounts = [{"name": "work", "mount_path": "/sdf/group/rubin/campaigns"},
              {"name": "pipelines", "mount_path": str(ROOT / "include" / "pipelines"), "read_only": True}]
    volumes = [{"name": "work", "persistent_volume_claim": "drp-work"},
               {"name": "pipelines", "config_map": "drp-pipelines"}]
    if REPO_ROOTS[site]:
        mounts.append({"name": "repo", "mount_path": REPO_ROOTS[site]})
        volumes.append({"name": "repo", "nfs": {"server": f"nfs.{site}.example", "path": REPO_ROOTS[site]}})
    return {
        "adapter": "kubernetes",
        "image": f"registry.{site}.example/multisite-drp:0.1",
        "namespace": f"drp-{site}",
        "service_account": "drp-commands",
        "resources": {"default": {"cpu": "1", "memory": "4Gi"},
                      "qgraph": {"cpu": "4", "memory": "64Gi", "memory_limit": "96Gi"},
                      "merge": {"memory": "16Gi"}},
        "node_selector": {"node.kubernetes.io/pool": "batch"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "drp", "effect": "NoSchedule"}],
        "volumes": volumes,
        "volume_mounts": mounts,
        "secrets": [{"secret": "rucio-cfg", "mount_path": "/opt/rucio/etc"},
                    {"secret": "s3-creds", "key": "credentials", "env": "S3_CREDENTIALS_FROM_SECRET"}],
        "env": {"RUCIO_CONFIG": "/opt/rucio/etc/rucio.cfg", "AWS_SHARED_CREDENTIALS_FILE": "/opt/aws/credentials"},
        "labels": {"team": "drp"},
        # the provider's own fields: the kube config is a credential, kept by the KubernetesHook only
        "kube_config": FAKE_SECRET, "cluster_context": f"{site}-prod",
    }


@pytest.fixture(scope="module")
def cfg():
    return load_campaign(PRODUCTION)


def _settings(cfg, site: str) -> dict:
    conn_id = cfg.site(site).connections.commands
    info = ConnectionInfo(conn_id=conn_id, extra=_extra(site), password=FAKE_SECRET,
                          where=f"drp_production.yaml: sites ({site}).connections.commands = connection {conn_id!r}")
    return factory.command_settings(cfg, site, info)


def _spec(cfg, site: str, kind: str, group: int = 3, step: str | None = None) -> CommandSpec:
    """The command the DAG runs for (step, site, group): the argv the embedded adapter runs."""
    step = step or ("step3" if site == "usdf" and kind == "qgraph" else "step1")
    name = names.command_name(cfg, step, site, 0, group, kind)
    run = names.output_run(cfg, step, site, 0, group)
    graph = cfg.work_path / "graphs" / f"{cfg.name}_{step}_{site}_g0_{names.group_label(group)}.qg"
    if kind == "qgraph":
        argv = middleware.qgraph_argv(cfg.repo_of(cfg.hub.name), cfg.pipeline_path, cfg.input_collections, None,
                                      run, graph.with_name(graph.stem + ".partial.qg"), subset=cfg.step(step).subset,
                                      data_query=cfg.data_query)
    elif kind == "merge":
        argv = middleware.merge_argv(cfg.repo_of(site), names.site_work_dir(cfg, site) / "graphs" / graph.name)
    else:
        argv = middleware.register_argv(cfg.repo_of(site), f"Dataset/{cfg.name}/g0/{step}/{site}/"
                                        f"{names.group_label(group)}/outputs", run,
                                        names.site_work_dir(cfg, site) / "rucio-register.yaml")
    return CommandSpec(name=name, site=site, kind=kind, argv=tuple(argv),
                       log_path=str(cfg.work_path / "logs" / f"{name}.log"),
                       timeout=cfg.timeouts.command_seconds,
                       labels={"step": step, "generation": "0", "group": str(group)})


def _render(cfg, site: str, spec: CommandSpec):
    from multisite_drp.hooks.pods import PodCommandService, rendered_json

    service = PodCommandService(_settings(cfg, site))
    pod = service.render(spec)
    return pod, json.loads(rendered_json(pod)), rendered_json(pod)


@pytest.mark.parametrize("site", ["usdf", "frdf", "ukdf"])
@pytest.mark.parametrize("kind", ["qgraph", "merge", "register"])
def test_pod_rendered_by_the_provider(cfg, site: str, kind: str) -> None:
    spec = _spec(cfg, site, kind)
    _, body, text = _render(cfg, site, spec)
    (container,) = body["spec"]["containers"]
    # image and namespace from the site's connection
    assert container["image"] == f"registry.{site}.example/multisite-drp:0.1"
    assert body["metadata"]["namespace"] == f"drp-{site}"
    assert body["spec"]["serviceAccountName"] == "drp-commands"
    assert body["spec"]["restartPolicy"] == "Never"
    # the argv, exactly as the embedded adapter runs it, as a list after the entrypoint: no shell
    assert container["command"] == ["/usr/bin/dumb-init", "--"]
    assert container["args"] == list(spec.argv)
    assert container["args"][0].endswith({"qgraph": "pipetask", "merge": "butler", "register": "rucio-register"}[kind])
    assert not any(a in ("sh", "bash", "-c", "/bin/sh") for a in container["command"] + container["args"])
    # resources: the kind's over the default
    want = {"qgraph": {"cpu": "4", "memory": "64Gi"}, "merge": {"cpu": "1", "memory": "16Gi"},
            "register": {"cpu": "1", "memory": "4Gi"}}[kind]
    assert container["resources"]["requests"] == want
    assert container["resources"].get("limits", {}) == ({"memory": "96Gi"} if kind == "qgraph" else {})
    assert body["spec"]["activeDeadlineSeconds"] == int(cfg.timeouts.command_seconds)
    assert body["spec"]["nodeSelector"] == {"node.kubernetes.io/pool": "batch"}
    assert body["spec"]["tolerations"][0]["key"] == "dedicated"
    # mounts: the work dir, the pipelines, the site's repository, the Rucio config Secret
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/sdf/group/rubin/campaigns" in mounts and str(ROOT / "include" / "pipelines") in mounts
    assert "/opt/rucio/etc" in mounts and mounts["/opt/rucio/etc"]["readOnly"] is True
    if REPO_ROOTS[site]:
        assert REPO_ROOTS[site] in mounts
    volumes = {v["name"]: v for v in body["spec"]["volumes"]}
    assert volumes["work"]["persistentVolumeClaim"] == {"claimName": "drp-work"}
    assert any(v.get("secret", {}).get("secretName") == "rucio-cfg" for v in volumes.values())
    # labels and name: deterministic, DNS-1123, bounded
    labels = body["metadata"]["labels"]
    assert body["metadata"]["name"] == names.pod_name(spec.name) == labels["multisite-drp.lsst.io/command"]
    assert len(body["metadata"]["name"]) <= 63
    assert labels["multisite-drp.lsst.io/site"] == site and labels["multisite-drp.lsst.io/kind"] == kind
    assert labels["multisite-drp.lsst.io/campaign"] == cfg.name and labels["team"] == "drp"
    assert body["metadata"]["annotations"]["multisite-drp.lsst.io/name"] == spec.name
    # secrets: by reference only; the fake credential is nowhere in the pod
    env = {e["name"]: e for e in container["env"]}
    assert env["S3_CREDENTIALS_FROM_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds",
                                                                              "key": "credentials"}
    assert "value" not in env["S3_CREDENTIALS_FROM_SECRET"]
    assert env["RUCIO_CONFIG"]["value"] == "/opt/rucio/etc/rucio.cfg"
    assert FAKE_SECRET not in text
    assert all(FAKE_SECRET not in str(e.get("value", "")) for e in container["env"])
    assert all(FAKE_SECRET not in a for a in container["args"])


def test_pod_names_are_deterministic_and_differ_by_group(cfg) -> None:
    a = _render(cfg, "frdf", _spec(cfg, "frdf", "qgraph", group=3))[0]
    b = _render(cfg, "frdf", _spec(cfg, "frdf", "qgraph", group=3))[0]
    c = _render(cfg, "frdf", _spec(cfg, "frdf", "qgraph", group=4))[0]
    assert a.metadata.name == b.metadata.name != c.metadata.name
    assert a.metadata.labels == b.metadata.labels
    assert a.spec.containers[0].args == b.spec.containers[0].args
    # names that sanitise alike still differ (the hash suffix), and stay bounded
    long = "DRP_" + "x" * 150
    assert names.pod_name(long) != names.pod_name(long + "y") and len(names.pod_name(long)) <= 63
    assert names.pod_name("A_b") != names.pod_name("A-b")


def test_settings_carry_no_secret_and_the_spec_fields(cfg) -> None:
    settings = _settings(cfg, "usdf")
    text = json.dumps(settings)
    assert FAKE_SECRET not in text and "kube_config" not in text
    assert settings["adapter"] == "kubernetes" and settings["conn_id"] == "drp_usdf_commands"
    # a campaign without a commands connection is embedded, recorded under the site's work dir
    assert factory.command_settings(cfg, "usdf", None)["adapter"] == "embedded"


@pytest.mark.parametrize(("change", "expected"), [
    ({"imagee": "x"}, "unknown extra field 'imagee'"),
    ({"image": None}, "extra field 'image'"),
    ({"secrets": [{"secret": "s3-creds", "env": "X"}]}, "'env' needs the Secret's 'key'"),
    ({"env": {"DB_PASSWORD": "hunter2"}}, "names or carries a credential"),
    ({"env": {"DB": "postgresql://u:" + FAKE_SECRET + "@h/db"}}, "names or carries a credential"),
    ({"resources": {"qgraph": {"memory": "lots"}}}, "extra field 'resources.qgraph.memory'"),
    ({"volume_mounts": [{"name": "nowhere", "mount_path": "/x"}]}, "names no volume"),
    ({"volumes": [{"name": "v", "persistent_volume_claim": "a", "host_path": "/b"}]}, "exactly one of"),
])
def test_bad_connection_extras_are_refused(cfg, change: dict, expected: str) -> None:
    extra = {**_extra("frdf"), **change}
    where = "drp_production.yaml: sites (frdf).connections.commands = connection 'drp_frdf_commands'"
    with pytest.raises(PodSettingsError) as info:
        pod_settings(extra, where)
    message = str(info.value)
    assert message.startswith(where) and expected in message
    assert FAKE_SECRET not in message  # a refused value is never echoed when it is a credential


def test_bad_adapter_and_unmounted_paths_are_refused(cfg) -> None:
    info = ConnectionInfo(conn_id="c", extra={"adapter": "k8s"}, where="w: connection 'c'")
    with pytest.raises(factory.AdapterError, match=r"w: connection 'c': extra field 'adapter' is 'k8s'"):
        factory.command_settings(cfg, "frdf", info)
    extra = _extra("frdf")
    extra["volume_mounts"] = [m for m in extra["volume_mounts"] if m["name"] != "repo"]
    info = ConnectionInfo(conn_id="drp_frdf_commands", extra=extra, where="w: connection 'drp_frdf_commands'")
    from multisite_drp.hooks.pods import PodCommandService

    service = PodCommandService(factory.command_settings(cfg, "frdf", info))
    with pytest.raises(PodSettingsError, match=r"names \['/sps/lsst/butler/main/butler.yaml'.*'volume_mounts'"):
        service.render(_spec(cfg, "frdf", "merge"))
    # a directory the image itself holds counts as reachable
    info = ConnectionInfo(conn_id="drp_frdf_commands", extra={**extra, "image_paths": ["/sps/lsst"]}, where="w")
    assert PodCommandService(factory.command_settings(cfg, "frdf", info)).render(_spec(cfg, "frdf", "merge"))
    with pytest.raises(Exception, match="credential"):
        service.render(CommandSpec(name="DRP_x", site="frdf", kind="merge", argv=("butler", "--help"),
                                   log_path="/sdf/group/rubin/campaigns/x.log",
                                   env={"API_TOKEN": FAKE_SECRET}, resources=Resources(cpu="1")))


def test_a_command_that_must_hold_a_file_lock_is_refused_before_the_cluster(cfg) -> None:
    """A merge into a local repository holds its write lock for its life (``CommandSpec.lock``);
    a pod cannot hold a lock on the worker's disk, so the pod adapter refuses it, before it
    asks the cluster anything (none here)."""
    import dataclasses

    from multisite_drp.hooks.pods import PodCommandService
    from multisite_drp.services.commands.base import CommandError

    service = PodCommandService(_settings(cfg, "frdf"))
    spec = dataclasses.replace(_spec(cfg, "frdf", "merge"), lock="/repo/.multisite-drp-write.lock", lock_seconds=60)
    with pytest.raises(CommandError, match="database-backed butler"):
        service.start(spec)


def test_pod_states_from_provider_objects() -> None:
    from kubernetes.client import models as k8s
    from multisite_drp.hooks.pods import pod_state

    def pod(phase, reason=None, waiting=None):
        statuses = [k8s.V1ContainerStatus(name="base", image="i", image_id="", ready=False, restart_count=0,
                                          state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(
                                              reason=waiting, message="not found")))] if waiting else None
        return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"),
                         status=k8s.V1PodStatus(phase=phase, reason=reason, container_statuses=statuses))

    assert pod_state(None)[0] is CommandState.MISSING
    assert pod_state(pod("Pending"))[0] is CommandState.PENDING
    assert pod_state(pod("Pending", waiting="InvalidImageName"))[0] is CommandState.FAILED
    assert pod_state(pod("Running"))[0] is CommandState.RUNNING
    assert pod_state(pod("Succeeded"))[0] is CommandState.SUCCEEDED
    state, why = pod_state(pod("Failed", reason="DeadlineExceeded"))
    assert state is CommandState.FAILED and "timed out" in why
    assert pod_state(pod("Unknown"))[0] is CommandState.LOST


def test_the_hooks_context_runs_a_sites_commands_in_its_pods(cfg) -> None:
    """``CampaignHook.get_conn``'s context holds each site's command runner, built when an
    action first asks for it from the site's ``commands`` connection: here the Kubernetes
    one, whose pod renders the hub's graph build as ``actions`` names and runs it. No
    cluster is asked (rendering only); a hand-built context gets the embedded runner."""
    import types

    from multisite_drp.hooks.campaign import CampaignHook
    from multisite_drp.hooks.pods import PodCommandService
    from multisite_drp.services import actions
    from multisite_drp.services.commands.embedded import EmbeddedCommandService

    def conn(extra, host=None, login=None, password=None):
        return types.SimpleNamespace(extra_dejson=extra, host=host, login=login, password=password, schema=None,
                                     port=None)

    conns = {}
    for s in cfg.sites:
        conns[s.connections.replica] = conn({"adapter": "rucio"}, "https://rucio.example", "drp", FAKE_SECRET)
        conns[s.connections.commands] = conn(_extra(s.name), password=FAKE_SECRET)
    ctx = CampaignHook(str(PRODUCTION), config=cfg, connections=conns).get_conn()
    assert repr(ctx.commands) == "LazyPorts(sites=['usdf', 'frdf', 'ukdf'], built=[])"
    runner = ctx.commands["frdf"]
    assert isinstance(runner, PodCommandService) and runner.namespace == "drp-frdf"
    argv = middleware.merge_argv(cfg.repo_of("frdf"), names.site_work_dir(cfg, "frdf") / "graphs" / "g.qg")
    spec = actions._command(ctx, "step1", "frdf", 2, "merge", argv, cfg.work_path / "logs" / "merge.log")
    assert spec.name == names.command_name(cfg, "step1", "frdf", 0, 2, "merge") and spec.site == "frdf"
    assert spec.timeout == cfg.timeouts.command_seconds
    pod = runner.render(spec)
    assert pod.spec.containers[0].args == list(argv) and pod.metadata.name == names.pod_name(spec.name)
    assert pod.spec.active_deadline_seconds == int(cfg.timeouts.command_seconds)

    hand = actions.CampaignContext(config=cfg, workflows={}, replica=None, butlers={})
    assert isinstance(hand.commands["usdf"], EmbeddedCommandService)
    assert hand.commands["usdf"].root == names.command_dir(cfg, "usdf")
