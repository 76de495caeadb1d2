"""deploy/: every YAML parses; Kubernetes, Docker, systemd essentials; the example configs load.

The configurations are loaded with the gateway's own loaders
(:func:`gateway.server.config.load_settings`, :func:`gateway.policy.loader.load_policy`),
so a schema change that breaks them fails here, not at a site's first start.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway.policy.loader import load_policy, policy_files
from gateway.server.config import GatewaySettings, load_settings, token_digest
from tests.deploy.tools import DEPLOY, REPO

K8S = DEPLOY / "kubernetes"
TWO_PARKS = DEPLOY / "two-parks"
UNIT = DEPLOY / "systemd" / "hksz-gateway.service"
SCRAPE = DEPLOY / "prometheus" / "scrape.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
#: The Secret the gateway reads GATEWAY_METRICS_TOKENS from, and its key.
GATEWAY_KEYS = "hksz-gateway-keys"
METRICS_DIGESTS_KEY = "metrics_tokens"
#: The Secret holding the metrics token for Prometheus.
METRICS_TOKEN_SECRET = "hksz-gateway-metrics-token"
#: Stand-in metrics token for the rendered kustomization (real ones never live in git).
STAND_IN_METRICS_TOKEN = "stand-in-metrics-token"
#: The shipped packs a park's policy directory holds next to its site file (90-demo.yaml
#: is the loopback demo's site file and is replaced by 90-site.yaml).
SHIPPED_PACKS = [p for p in policy_files(REPO / "policies") if p.name != "90-demo.yaml"]
#: The HGR pack only governs sz->hk (Mainland HGR leaving the Mainland) and its white
#: list names a Shenzhen organisation, which the HK park does not declare: the HK
#: park leaves it out (deploy/two-parks/hk-site.yaml says so).
NOT_IN_PARK = {"sz": frozenset[str](), "hk": frozenset({"10-hgr.yaml"})}
#: An age X25519 recipient (bech32 with checksum), used where the example expects the
#: other park's public key file.
TWIN_RECIPIENT = "age13zr3qhs3k2kw4t8zjqawdml6nsre0a7n9560ehkast3gv843y56qseu28q"
#: systemd-analyze verify loads unit dependencies; a few seconds is plenty.
SYSTEMD_ANALYZE_TIMEOUT_SECONDS = 60


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def _k8s_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    documents: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        documents.extend(
            d for d in yaml.safe_load_all((K8S / resource).read_text(encoding="utf-8")) if d
        )
    return documents


def _park_settings() -> GatewaySettings:
    """The Kubernetes park's gateway.toml, as a pod loads it (its environment adds
    GATEWAY_INSTANCE and GATEWAY_METRICS_TOKENS; callers set those they need)."""
    return load_settings(K8S / "gateway.toml")


def _kind(kind: str) -> dict[str, Any]:
    matches = [d for d in _k8s_documents() if d["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def _kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        (K8S / "kustomization.yaml").read_text(encoding="utf-8")
    )
    return loaded


def _generated(kind: str) -> dict[str, list[str]]:
    """Generator name -> its files, for ``configMapGenerator`` or ``secretGenerator``."""
    return {g["name"]: g.get("files", []) for g in _kustomization().get(kind, [])}


def _pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _kind("StatefulSet")["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    (container,) = _pod_spec()["containers"]
    return dict(container)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert documents, f"{path} is empty"


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk


def test_a_statefulset_the_autoscaler_sizes_with_probes_on_readyz_and_healthz() -> None:
    park = _kind("StatefulSet")
    # Stable pod names are the instances' names; the HPA owns the replica count.
    assert "replicas" not in park["spec"]
    peers = next(
        d
        for d in _k8s_documents()
        if d["kind"] == "Service" and d["metadata"]["name"] == park["spec"]["serviceName"]
    )
    assert peers["spec"]["clusterIP"] == "None"
    container = _container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names


def test_pods_are_non_root_and_hardened() -> None:
    pod = _pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    context = _container()["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context.get("privileged", False) is False


def test_keys_reach_the_gateway_owner_only() -> None:
    # The audit signing key is refused when group or others can read it
    # (gateway/audit/keys.py); Secret files get group read under fsGroup.
    (init,) = _pod_spec()["initContainers"]
    assert "install -m 0600 " in " ".join(init["args"])
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in _pod_spec()["volumes"]}
    secret_volumes = {name for name, v in volumes.items() if "secret" in v}
    assert not secret_volumes & {m["name"] for m in _container()["volumeMounts"]}
    keys = next(m for m in _container()["volumeMounts"] if m["name"] == "keys")
    assert keys["readOnly"] is True
    assert volumes["keys"]["emptyDir"]["medium"] == "Memory"


def test_the_image_user_matches_the_pod_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    uid = re.search(r"ARG GATEWAY_UID=(\d+)", dockerfile)
    assert uid is not None
    assert _pod_spec()["securityContext"]["runAsUser"] == int(uid.group(1))


def test_referenced_configmaps_and_secrets_exist() -> None:
    config_maps = set(_generated("configMapGenerator")) | {
        d["metadata"]["name"] for d in _k8s_documents() if d["kind"] == "ConfigMap"
    }
    secrets = _generated("secretGenerator")
    pod = _pod_spec()
    used_maps = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    used_secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert used_maps == {"hksz-gateway-config", "hksz-gateway-policies"}
    assert used_maps <= config_maps
    assert used_secrets <= set(secrets)
    secret_keys = {name: {PurePosixPath(f).name for f in files} for name, files in secrets.items()}
    for node in _walk(pod):
        ref = node.get("secretKeyRef")
        if ref is not None:
            assert ref["key"] in secret_keys[ref["name"]], ref
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims <= {
        d["metadata"]["name"] for d in _k8s_documents() if d["kind"] == "PersistentVolumeClaim"
    }


def test_generated_files_exist_except_the_keys_an_operator_creates() -> None:
    for files in _generated("configMapGenerator").values():
        for name in files:
            assert (K8S / name).is_file(), name
    for files in _generated("secretGenerator").values():
        assert all(PurePosixPath(name).parts[0] == "keys" for name in files)
    # Key material never lives in the repository.
    assert not (K8S / "keys").exists()


def test_replicas_share_a_postgresql_ledger_whose_password_is_a_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {e["name"]: e for e in _container()["env"]}
    assert "GATEWAY_LEDGER_URL" not in env  # no credential in the environment
    monkeypatch.setenv("GATEWAY_INSTANCE", "hksz-gateway-0")
    settings = _park_settings()
    assert settings.ledger_url.startswith("postgresql://")
    assert "@" in settings.ledger_url
    assert ":" not in settings.ledger_url.split("://", 1)[1].split("@", 1)[0]  # no password
    assert settings.ledger_password_file is not None
    assert _under_mount(settings.ledger_password_file) == "keys"
    key_files = {PurePosixPath(f).name for f in _generated("secretGenerator")["hksz-gateway-keys"]}
    assert settings.ledger_password_file.name in key_files
    assert settings.audit.origin.endswith("/hksz-gateway-0")


def test_each_replica_has_its_own_audit_origin_and_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = _container()
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    assert env["GATEWAY_INSTANCE"] == "$(POD_NAME)"
    assert "GATEWAY_AUDIT__ORIGIN" not in env
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/hksz-gateway")
    assert data["subPathExpr"] == "$(POD_NAME)"
    origins = set()
    for pod in ("hksz-gateway-0", "hksz-gateway-1"):
        monkeypatch.setenv("GATEWAY_INSTANCE", pod)
        origins.add(_park_settings().audit.origin)
    assert len(origins) == 2


def _mounts() -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}


def _under_mount(path: Path) -> str | None:
    for mount, name in _mounts().items():
        if path.is_relative_to(mount):
            return name
    return None


def test_config_paths_point_into_the_right_mounts() -> None:
    settings = _park_settings()
    assert settings.egress is not None
    assert settings.ingress is not None
    assert _container()["args"] == ["--config", "/etc/hksz-gateway/config/gateway.toml"]
    key_files = {PurePosixPath(f).name for f in _generated("secretGenerator")["hksz-gateway-keys"]}
    secret_paths = [
        settings.secret_file,
        settings.audit.signing_key,
        settings.egress.spool_identity,
        settings.ingress.identity,
    ]
    for tls in (settings.egress.tls, settings.ingress.tls, settings.egress.upstream_tls):
        assert tls is not None
        secret_paths += [tls.cert, tls.key]
    for path in secret_paths:
        assert _under_mount(path) == "keys", path
        assert path.name in key_files, path
    for path in (settings.audit.dir, settings.egress.spool_dir, settings.ingress.spool_dir):
        assert _under_mount(path) == "data", path
    assert _under_mount(settings.egress.policy_dir) == "policies"
    ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    assert (settings.egress.port, settings.ingress.port) == (ports["egress"], ports["ingress"])


def test_the_policy_configmap_loads_with_the_real_policy_loader(tmp_path: Path) -> None:
    # The ConfigMap is projected as one flat directory of its files.
    for name in _generated("configMapGenerator")["hksz-gateway-policies"]:
        shutil.copy(K8S / name, tmp_path / PurePosixPath(name).name)
    policy = load_policy(tmp_path)
    assert set(policy.routes) == {"sz-to-hk-research", "sz-to-hk-clinical"}
    packs = {
        PurePosixPath(n).name for n in _generated("configMapGenerator")["hksz-gateway-policies"]
    }
    assert {p.name for p in SHIPPED_PACKS} <= packs, "a shipped pack is missing from the ConfigMap"


def test_services_pdb_and_hpa_select_the_statefulset() -> None:
    park = _kind("StatefulSet")
    pod_labels = park["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"] for p in _container()["ports"]}
    for service in (d for d in _k8s_documents() if d["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    pdb = _kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = _kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert hpa["spec"]["scaleTargetRef"]["name"] == park["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 3


def test_grace_period_covers_the_pause_the_drain_and_the_longest_transfer() -> None:
    settings = _park_settings()
    assert settings.egress is not None
    # A rollout cuts no transfer the config allows.
    assert settings.drain_seconds >= settings.egress.total_timeout
    command = _container()["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(command[-1].removeprefix("sleep "))
    assert 1 <= pause <= 15
    assert _pod_spec()["terminationGracePeriodSeconds"] >= pause + settings.drain_seconds + 10


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert froms
    # Pinned by digest: tests/deploy/test_dockerfile.py.
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?", f) for f in froms)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*", text, re.MULTILINE)
    assert "/healthz" in (DEPLOY / "healthcheck.py").read_text(encoding="utf-8")
    assert re.search(r"^EXPOSE 8080 9443$", text, re.MULTILINE)
    assert '"/etc/hksz-gateway/gateway.toml"' in text


def test_docker_build_context_admits_only_what_the_image_copies() -> None:
    # BuildKit reads deploy/Dockerfile.dockerignore for deploy/Dockerfile.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    admitted = {line.removeprefix("!").rstrip("/") for line in rules if line.startswith("!")}
    copied = set()
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(line.split()[1:-1])
    assert copied == admitted


def _unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ReadWritePaths", "/var/lib/hksz-gateway"),
    ],
)
def test_systemd_unit_is_hardened(key: str, value: str) -> None:
    assert _unit()[key] == [value]


def test_systemd_unit_runs_unprivileged_and_reloads_with_sighup() -> None:
    unit = _unit()
    assert unit["User"] not in (["root"], ["0"])
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["ExecStart"][0].split()[1:3] == ["serve", "--config"]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (systemd package)")
    # The real ExecStart needs an installed venv; verify everything else.
    unit = tmp_path / UNIT.name
    text = UNIT.read_text(encoding="utf-8")
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.MULTILINE))
    result = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=SYSTEMD_ANALYZE_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("park", ["sz", "hk"])
def test_two_park_configs_load_with_the_real_config_loader(park: str) -> None:
    settings = load_settings(TWO_PARKS / f"{park}.toml")
    assert settings.name == park
    assert settings.egress is not None
    assert settings.ingress is not None
    assert settings.ingress.tls.require_client_cert
    assert settings.egress.upstream_tls is not None


@pytest.mark.parametrize(
    "config", ["two-parks/sz.toml", "two-parks/hk.toml", "kubernetes/gateway.toml"]
)
def test_example_configs_pin_the_twin_by_public_key(config: str) -> None:
    # Issue 11, finding 8: by name alone, a certificate the twin's CA issued under
    # that name for another key would pass. The examples pin keys both ways, with
    # placeholders that match no key until the operator pastes the real pins.
    settings = load_settings(DEPLOY / config)
    assert settings.ingress is not None
    assert settings.ingress.twin_names
    assert len(settings.ingress.twin_spki) == 1
    assert settings.ingress.twin_spki[0].startswith("REPLACE/")
    assert settings.egress is not None
    assert settings.egress.upstream_tls is not None
    assert len(settings.egress.upstream_tls.pin_spki) == 1
    assert settings.egress.upstream_tls.pin_spki[0].startswith("REPLACE/")


@pytest.mark.parametrize("park", ["sz", "hk"])
def test_two_park_state_is_writable_under_the_systemd_sandbox(park: str) -> None:
    # ProtectSystem=strict makes everything read-only but ReadWritePaths.
    (writable,) = _unit()["ReadWritePaths"]
    settings = load_settings(TWO_PARKS / f"{park}.toml")
    assert settings.egress is not None
    assert settings.ingress is not None
    inboxes = [
        Path(url.removeprefix("file://"))
        for url in settings.ingress.deliver.values()
        if url.startswith("file://")
    ]
    paths = [
        settings.audit.dir,
        settings.egress.spool_dir,
        settings.ingress.spool_dir,
        Path(settings.ledger_url),
        *inboxes,
    ]
    assert inboxes
    for path in paths:
        assert path.is_relative_to(writable), path


def _parks() -> tuple[GatewaySettings, GatewaySettings]:
    return load_settings(TWO_PARKS / "sz.toml"), load_settings(TWO_PARKS / "hk.toml")


def test_the_two_parks_are_mirror_images() -> None:
    sz, hk = _parks()
    assert sz.audit.origin != hk.audit.origin  # two logs, two checkpoint origins
    assert sz.ingress is not None
    assert hk.ingress is not None
    sz_routes = _site_routes("sz")
    hk_routes = _site_routes("hk")
    # What one park's egress sends, the other park's ingress delivers.
    assert set(sz_routes) == set(hk.ingress.deliver)
    assert set(hk_routes) == set(sz.ingress.deliver)
    assert {r["direction"] for r in sz_routes.values()} == {"sz->hk"}
    assert {r["direction"] for r in hk_routes.values()} == {"hk->sz"}
    for route in sz_routes.values():
        assert route["destination"].endswith(f":{hk.ingress.port}")
    for route in hk_routes.values():
        assert route["destination"].endswith(f":{sz.ingress.port}")


def _site_routes(park: str) -> dict[str, dict[str, Any]]:
    site = yaml.safe_load((TWO_PARKS / f"{park}-site.yaml").read_text(encoding="utf-8"))
    routes: dict[str, dict[str, Any]] = site["routes"]
    return routes


@pytest.mark.parametrize(("park", "twin"), [("sz", "hk"), ("hk", "sz")])
def test_site_policies_load_with_the_shipped_packs(park: str, twin: str, tmp_path: Path) -> None:
    assert SHIPPED_PACKS, "no shipped policy packs in policies/"
    for pack in SHIPPED_PACKS:
        if pack.name not in NOT_IN_PARK[park]:
            shutil.copy(pack, tmp_path / pack.name)
    shutil.copy(TWO_PARKS / f"{park}-site.yaml", tmp_path / "90-site.yaml")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / f"{twin}-ingress.age.pub").write_text(TWIN_RECIPIENT + "\n")
    policy = load_policy(tmp_path)
    assert set(policy.routes) == set(_site_routes(park))


def _scrape_job() -> dict[str, Any]:
    config = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert isinstance(job, dict)
    return job


def test_the_gateway_takes_its_metrics_token_digests_from_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {e["name"]: e for e in _container()["env"]}
    ref = env["GATEWAY_METRICS_TOKENS"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (GATEWAY_KEYS, METRICS_DIGESTS_KEY)
    digest = token_digest("any-token")
    monkeypatch.setenv("GATEWAY_METRICS_TOKENS", json.dumps([digest]))
    assert _park_settings().metrics_tokens == (digest,)


def test_the_scrape_job_sends_the_metrics_token_of_the_kustomization() -> None:
    job = _scrape_job()
    # The job GatewayDown selects.
    assert f'up{{job="{job["job_name"]}"}}' in ALERTS.read_text(encoding="utf-8")
    assert job["scheme"] == "https"
    assert job["authorization"]["type"] == "Bearer"
    credentials = PurePosixPath(job["authorization"]["credentials_file"])
    # Mounted as /…/<secret name>/<key>: that Secret is generated, holds that key,
    # and keeps its name (Prometheus mounts it by name).
    generators = {g["name"]: g for g in _kustomization()["secretGenerator"]}
    token_secret = generators[credentials.parent.name]
    assert credentials.parent.name == METRICS_TOKEN_SECRET
    assert credentials.name in {PurePosixPath(f).name for f in token_secret["files"]}
    assert token_secret["options"]["disableNameSuffixHash"] is True
    # It scrapes this park's pods on the port the annotations name.
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["namespaces"]["names"] == [_kustomization()["namespace"]]
    annotations = _kind("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    kept = {
        r["source_labels"][0]: r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    assert (
        kept["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
        == annotations["prometheus.io/scrape"]
    )
    assert ports[kept["__meta_kubernetes_pod_container_port_name"]] == int(
        annotations["prometheus.io/port"]
    )
    assert job["metrics_path"] == annotations["prometheus.io/path"]
    assert (SCRAPE.parent / yaml.safe_load(SCRAPE.read_text())["rule_files"][0]).is_file()


@pytest.mark.parametrize("park", ["sz", "hk"])
def test_two_park_configs_leave_metrics_to_a_prometheus_on_loopback(park: str) -> None:
    # systemd: Prometheus on the same host scrapes 127.0.0.1, admitted without a token.
    assert load_settings(TWO_PARKS / f"{park}.toml").metrics_tokens == ()
    text = (TWO_PARKS / f"{park}.toml").read_text(encoding="utf-8")
    assert "https://127.0.0.1:8080/metrics" in text
    assert "metrics_tokens" in UNIT.read_text(encoding="utf-8")


#: kubectl kustomize renders a dozen small objects; seconds at most.
KUSTOMIZE_TIMEOUT_SECONDS = 120


def _render(tmp_path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a copy of the tree, with stand-in key files."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it renders the kustomization)")
    root = tmp_path / "repo"
    shutil.copytree(K8S, root / "deploy" / "kubernetes")
    shutil.copytree(REPO / "policies", root / "policies")
    keys = root / "deploy" / "kubernetes" / "keys"
    keys.mkdir()
    for files in _generated("secretGenerator").values():
        for name in files:
            (keys / PurePosixPath(name).name).write_text("stand-in\n")
    # What docs/operations.md has the operator write: the token, and its digest as JSON.
    (keys / "metrics-token").write_text(STAND_IN_METRICS_TOKEN)
    (keys / METRICS_DIGESTS_KEY).write_text(json.dumps([token_digest(STAND_IN_METRICS_TOKEN)]))
    result = subprocess.run(
        [
            kubectl,
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            str(root / "deploy" / "kubernetes"),
        ],
        capture_output=True,
        text=True,
        timeout=KUSTOMIZE_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kustomize_renders_a_consistent_park(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _render(tmp_path)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "hksz-gateway", obj["metadata"]["name"]
    secrets = {s["metadata"]["name"]: s for s in by_kind["Secret"]}
    config_maps = {c["metadata"]["name"]: c for c in by_kind["ConfigMap"]}
    (park,) = by_kind["StatefulSet"]
    pod = park["spec"]["template"]["spec"]
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
    for node in _walk(pod):
        ref = node.get("secretKeyRef")
        if ref is not None:
            assert ref["key"] in secrets[ref["name"]]["data"]
    # Prometheus' token and the gateway's digest of it come out of the render
    # as two Secrets that agree; the token's Secret keeps its name, so the
    # Prometheus that mounts it by name follows a rotation.
    assert METRICS_TOKEN_SECRET in secrets
    token = base64.b64decode(secrets[METRICS_TOKEN_SECRET]["data"]["metrics-token"]).decode()
    (container,) = pod["containers"]
    ref = next(e for e in container["env"] if e["name"] == "GATEWAY_METRICS_TOKENS")
    secret_ref = ref["valueFrom"]["secretKeyRef"]
    digests = base64.b64decode(secrets[secret_ref["name"]]["data"][secret_ref["key"]]).decode()
    monkeypatch.setenv("GATEWAY_METRICS_TOKENS", digests)
    assert _park_settings().metrics_tokens == (token_digest(token),)
    # The policy ConfigMap keeps its name so that edits reach running pods.
    policies = config_maps["hksz-gateway-policies"]["data"]
    policy_dir = tmp_path / "projected"
    policy_dir.mkdir()
    for name, text in policies.items():
        (policy_dir / name).write_text(text, encoding="utf-8")
    assert set(load_policy(policy_dir).routes) == {"sz-to-hk-research", "sz-to-hk-clinical"}


def test_the_shipped_configurations_witness_each_other() -> None:
    from gateway.policy.model import glob_to_regex

    parks = {park: load_settings(TWO_PARKS / f"{park}.toml") for park in ("sz", "hk")}
    for park, twin in (("sz", "hk"), ("hk", "sz")):
        mine, theirs = parks[park], parks[twin]
        assert mine.egress is not None
        assert mine.ingress is not None
        assert mine.ingress.witness is not None
        assert mine.egress.witness_url is not None
        assert f"gateway.{twin}." in mine.egress.witness_url
        assert mine.ingress.witness.origin == theirs.audit.origin
    # On Kubernetes the twin runs replicas: a glob of their {instance} origins.
    k8s = _park_settings()
    assert k8s.egress is not None
    assert k8s.ingress is not None
    assert k8s.egress.witness_url is not None
    assert k8s.ingress.witness is not None
    pattern = glob_to_regex(k8s.ingress.witness.origin)
    assert pattern.fullmatch("hksz-gateway.hk.hetao/audit/hksz-gateway-0")
    assert not pattern.fullmatch(k8s.audit.origin)  # never its own park's logs
    key_files = {PurePosixPath(f).name for f in _generated("secretGenerator")["hksz-gateway-keys"]}
    assert PurePosixPath(k8s.ingress.witness.log_key).name in key_files


def _validate_all(documents: Iterable[dict[str, Any]]) -> list[str]:
    """kubernetes-validate (the API's own OpenAPI schemas, strict) of built-in kinds."""
    from kubernetes_validate import validate
    from kubernetes_validate.utils import ValidationError

    problems = []
    for document in documents:
        if document["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Operator CRDs: checked by test_operator_objects_match_the_plain_config
        try:
            validate(document, KUBERNETES_VERSION, strict=True)
        except ValidationError as exc:
            problems.append(f"{document['kind']}/{document['metadata']['name']}: {exc.message}")
    return problems


#: The oldest Kubernetes the manifests are for (native sidecar-free, StatefulSet
#: minReadySeconds, NetworkPolicy endPort all exist there).
KUBERNETES_VERSION = "1.30.0"


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    assert _validate_all(_k8s_documents()) == []


def test_the_validation_can_fail() -> None:
    broken = [dict(_kind("StatefulSet"))]
    broken[0] = {**broken[0], "spec": {**broken[0]["spec"], "replicaz": 3}}
    assert _validate_all(broken)


def test_the_rendered_park_validates(tmp_path: Path) -> None:
    assert _validate_all(_render(tmp_path)) == []


def test_operator_objects_match_the_plain_config() -> None:
    folder = K8S / "prometheus-operator"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    objects = {
        d["kind"]: d
        for name in kustomization["resources"]
        for d in yaml.safe_load_all((folder / name).read_text(encoding="utf-8"))
        if d
    }
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    assert objects["PrometheusRule"]["spec"]["groups"] == rules["groups"]
    monitor = objects["ServiceMonitor"]["spec"]
    (service,) = [
        d
        for d in _k8s_documents()
        if d["kind"] == "Service" and d["metadata"]["name"] == "hksz-gateway"
    ]
    assert (
        monitor["selector"]["matchLabels"].items()
        <= {
            **service["metadata"]["labels"],
            "app.kubernetes.io/name": "hksz-gateway",  # added by the kustomization
        }.items()
    )
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["authorization"]["credentials"]["name"] in _generated("secretGenerator")


def test_a_network_policy_admits_only_the_twin_to_the_ingress_port() -> None:
    policy = _kind("NetworkPolicy")
    pod_labels = _kind("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    to_ingress = [
        rule
        for rule in policy["spec"]["ingress"]
        if any(port["port"] == "ingress" for port in rule["ports"])
    ]
    (twin,) = to_ingress
    assert all("ipBlock" in peer for peer in twin["from"])
    egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert egress_ports == {5432, 9443, 443, 53}


def test_the_shared_volume_names_a_storage_class_to_replace() -> None:
    claim = _kind("PersistentVolumeClaim")["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    assert claim["storageClassName"].startswith("replace-")


def _mount_holding(path: Path) -> dict[str, Any]:
    """The container's one volume mount that ``path`` is under."""
    (mount,) = [m for m in _container()["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    return mount


def _assert_shared_by_every_pod(mount: dict[str, Any]) -> None:
    # The same volume for all pods, not a per-pod subPathExpr.
    assert mount["name"] == "data"
    assert "subPathExpr" not in mount
    assert mount["subPath"] == "shared"


def test_pipelined_payloads_wait_where_every_replica_finds_them() -> None:
    settings = _park_settings()
    assert settings.ingress is not None
    assert settings.ingress.payload_dir is not None
    _assert_shared_by_every_pod(_mount_holding(settings.ingress.payload_dir))


def test_held_reviews_are_shared_and_a_rename_away_from_each_replica_s_spool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spools = set()
    for pod in ("hksz-gateway-0", "hksz-gateway-1"):
        monkeypatch.setenv("GATEWAY_INSTANCE", pod)
        egress = _park_settings().egress
        assert egress is not None
        assert egress.held_dir is not None
        # Any replica decides any held review, also one whose pod is gone.
        held = _mount_holding(egress.held_dir)
        _assert_shared_by_every_pod(held)
        # Holding a review renames its spool file: the spool is on the same mount.
        assert _mount_holding(egress.spool_dir) == held
        spools.add(egress.spool_dir)
    assert len(spools) == 2  # on the shared mount, each replica's spool is its own
