"""The Kubernetes manifests: generated files up to date, kustomize builds, Kubernetes schemas, topics
matching the catalogue, and the production rules (probes, limits, non-root, PDBs, HPAs, durability)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from deploy.scripts import checks, kustomize_lite, render
from hybridpool_cli.supervisor import SERVICES
from hybridpool_shared import topics
from hybridpool_shared.topics import all_topics

REPO = render.REPO
KUBERNETES_VERSION = "1.31.0"
# Custom resources of the operators k8s/ needs (Strimzi, Prometheus Operator); their schemas are not
# in kubernetes-validate, so the tests below check their content field by field.
CUSTOM_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
BUILDS = {"base": REPO / "k8s/base", "production": REPO / "k8s/overlays/production"}

Doc = dict[str, Any]


@pytest.fixture(scope="module", params=sorted(BUILDS))
def built(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    """Each kustomization, built."""
    name: str = request.param
    return name, checks.kustomize(BUILDS[name])


def _by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_generated_files_are_up_to_date() -> None:
    assert render.stale() == [], "run: python -m deploy.scripts.render"


def test_every_object_validates_against_the_kubernetes_schemas(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    core = [d for d in docs if d["kind"] not in CUSTOM_KINDS]
    assert len(core) > 30
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert {d["kind"] for d in docs} - {d["kind"] for d in core} <= CUSTOM_KINDS


def test_the_schema_check_rejects_a_broken_deployment() -> None:
    deployment = copy.deepcopy(render.deployment("telemetry", render.PLANS["telemetry"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = ["http"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = copy.deepcopy(render.deployment("telemetry", render.PLANS["telemetry"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_python_renderer_matches_kubectl_kustomize() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl here: the builds above used deploy/scripts/kustomize_lite.py")
    for directory in BUILDS.values():
        key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
        lite = sorted(kustomize_lite.build(directory), key=key)
        real = sorted(checks.kustomize(directory), key=key)
        assert lite == real


def test_python_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(kustomize_lite.KustomizeError, match="configMapGenerator"):
        kustomize_lite.build(tmp_path)


def test_every_service_has_a_hardened_deployment_a_service_and_a_pdb(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    deployments = _by_kind(docs, "Deployment")
    services = _by_kind(docs, "Service")
    budgets = _by_kind(docs, "PodDisruptionBudget")
    for name in SERVICES:
        k8s = render.k8s_name(name)
        pod = deployments[k8s]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [name]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health"
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert services[k8s]["spec"]["selector"] == deployments[k8s]["spec"]["selector"]["matchLabels"]
        assert budgets[k8s]["spec"]["selector"] == deployments[k8s]["spec"]["selector"]
        env = {e["name"] for e in container["env"]}
        assert {f"{name.upper()}_HTTP_HOST", "REDIS_URL", "REDIS_PASSWORD"} <= env
        assert container["envFrom"] == [{"configMapRef": {"name": "hybridpool-config"}}]


def test_only_partition_scaled_consumers_autoscale_within_their_partitions(
    built: tuple[str, list[Doc]],
) -> None:
    _, docs = built
    hpas = _by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"telemetry", "dispatch"}
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"] for t in _by_kind(docs, "KafkaTopic").values()
    }
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # A consumer beyond the partition count of sites.telemetry would sit idle.
        assert hpa["spec"]["maxReplicas"] <= partitions[topics.SITES_TELEMETRY.name]
    assert hpas["telemetry"]["spec"]["maxReplicas"] == partitions[topics.SITES_TELEMETRY.name]
    # dispatch's fleet view is per process until activations reach every replica: one replica for now.
    assert hpas["dispatch"]["spec"]["maxReplicas"] == render.PLANS["dispatch"].replica_cap == 1


def test_kafka_topics_are_the_catalogue(built: tuple[str, list[Doc]]) -> None:
    which, docs = built
    resources = {t["spec"]["topicName"]: t for t in _by_kind(docs, "KafkaTopic").values()}
    expected = {spec.name: spec for spec in all_topics()}
    assert set(resources) == set(expected)
    for name, spec in expected.items():
        topic = resources[name]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "hybridpool"
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"] == {**spec.configs(), "min.insync.replicas": "2"}
        wanted = (
            render.PRODUCTION_PARTITIONS.get(name, spec.partitions)
            if which == "production"
            else spec.partitions
        )
        assert topic["spec"]["partitions"] == wanted


def test_production_partitions_only_grow_and_cover_the_per_site_topics() -> None:
    for name, count in render.PRODUCTION_PARTITIONS.items():
        assert count >= topics.BY_NAME[name].partitions, name
    per_site = {spec.name for spec in topics.CATALOGUE if spec.key.startswith("site_id")}
    assert per_site <= set(render.PRODUCTION_PARTITIONS)
    # Order-sensitive topics stay on one partition.
    assert topics.AUDIT_LOG.name not in render.PRODUCTION_PARTITIONS


def test_partitions_doc_states_the_production_partitions() -> None:
    text = (REPO / "docs" / "partitions.md").read_text()
    for name, count in render.PRODUCTION_PARTITIONS.items():
        assert f"| `{name}` | {topics.BY_NAME[name].partitions} | {count} |" in text, name


def test_kafka_is_kraft_with_three_replicas_and_min_isr_two(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    (kafka,) = _by_kind(docs, "Kafka").values()
    (pool,) = _by_kind(docs, "KafkaNodePool").values()
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert pool["spec"]["replicas"] == 3
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["unclean.leader.election.enable"] is False
    assert config["auto.create.topics.enable"] is False
    assert kafka["spec"]["kafkaExporter"]["groupRegex"].startswith("hybridpool")


def test_producers_are_idempotent_and_secrets_are_only_referenced(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    config = _by_kind(docs, "ConfigMap")["hybridpool-config"]["data"]
    assert config["KAFKA_IDEMPOTENCE"] == "true"
    assert config["HYBRIDPOOL_REPLICATION_FACTOR"] == "3"
    assert config["KAFKA_BOOTSTRAP"].startswith("hybridpool-kafka-bootstrap:")
    assert _by_kind(docs, "Secret") == {}


def test_redis_keeps_an_append_only_file_on_a_volume(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    conf = _by_kind(docs, "ConfigMap")["redis-config"]["data"]["redis.conf"]
    assert "appendonly yes" in conf
    redis = _by_kind(docs, "StatefulSet")["redis"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert redis["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_monitoring_scrapes_every_service_and_carries_the_rules(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    (monitor,) = _by_kind(docs, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    for name in SERVICES:
        labels = _by_kind(docs, "Service")[render.k8s_name(name)]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert labels["hybridpool.dev/service"] == name
    (rule,) = _by_kind(docs, "PrometheusRule").values()
    assert rule["spec"]["groups"] == render.rule_groups()


def test_production_runs_no_simulators_and_pins_the_image() -> None:
    docs = checks.kustomize(BUILDS["production"])
    deployments = _by_kind(docs, "Deployment")
    assert deployments["site-sim"]["spec"]["replicas"] == 0
    assert deployments["market-sim"]["spec"]["replicas"] == 0
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments.values()}
    assert len(images) == 1
    assert not images.pop().startswith("hybridpool:")


def test_the_deployed_settings_give_acks_all_idempotent_producers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's environment, read by a real service build, yields the durable producer."""
    config = _by_kind(checks.kustomize(BUILDS["production"]), "ConfigMap")["hybridpool-config"]["data"]
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    service = checks.build_service("dispatch")
    producer = service.broker._connection_kwargs  # what aiokafka's producer is created with
    assert producer["acks"] == "all"
    assert producer["enable_idempotence"] is True
    assert service.settings.kafka_bootstrap == config["KAFKA_BOOTSTRAP"]
