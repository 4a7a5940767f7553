"""A small kustomize renderer for machines without kustomize or kubectl (Debian has neither package).

It covers exactly the features k8s/ uses, with kustomize's semantics:
- `resources`: YAML files and directories holding a kustomization.yaml (recursively);
- `namespace`: set on every namespaced object (and renames the Namespace object, as kustomize does);
- `labels` with `pairs`, `includeTemplates` (pod and volume claim templates get them too) and
  `includeSelectors: false`;
- `images`: `newName`/`newTag` for containers whose image name matches;
- `patches` with `path`: a strategic merge patch matched by kind and name; lists of objects with a
  `name` (containers, volumeClaimTemplates by metadata.name) merge by name, other lists are replaced.
Anything else in a kustomization is refused, so a new feature cannot be silently ignored; where
kubectl is installed the tests check that this renderer's output equals `kubectl kustomize`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
TEMPLATED = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

Doc = dict[str, Any]


class KustomizeError(ValueError):
    """The kustomization uses a feature this renderer does not implement, or is malformed."""


def build(directory: Path) -> list[Doc]:
    """Render the kustomization in directory into a list of Kubernetes objects."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs += build(path)
        else:
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        _apply_patch_file(docs, directory / patch["path"])
    for rule in kustomization.get("labels", []):
        _add_labels(docs, rule)
    for image in kustomization.get("images", []):
        _set_image(docs, image)
    if namespace := kustomization.get("namespace"):
        _set_namespace(docs, namespace)
    return docs


def _apply_patch_file(docs: list[Doc], path: Path) -> None:
    for patch in yaml.safe_load_all(path.read_text()):
        if not patch:
            continue
        targets = [
            d
            for d in docs
            if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]
        ]
        if len(targets) != 1:
            raise KustomizeError(
                f"{path}: patch for {patch['kind']}/{patch['metadata']['name']} matches {len(targets)}"
            )
        merged = merge(targets[0], patch)
        targets[0].clear()
        targets[0].update(merged)


def merge(base: Any, patch: Any) -> Any:
    """Return base with patch merged in: maps recursively, named lists by name, other values replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        out_list = copy.deepcopy(base)
        for item in patch:
            index = next((i for i, old in enumerate(out_list) if _name(old) == _name(item)), None)
            if index is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[index] = merge(out_list[index], item)
        return out_list
    return copy.deepcopy(patch)


def _name(item: Any) -> Any:
    return item.get("name", item.get("metadata", {}).get("name")) if isinstance(item, dict) else None


def _named(items: list[Any]) -> bool:
    return bool(items) and all(_name(i) is not None for i in items)


def _add_labels(docs: list[Doc], rule: Doc) -> None:
    if rule.get("includeSelectors"):
        raise KustomizeError("labels.includeSelectors is not supported")
    pairs: dict[str, str] = rule["pairs"]
    for doc in docs:
        doc["metadata"].setdefault("labels", {}).update(pairs)
        if rule.get("includeTemplates") and doc["kind"] in TEMPLATED:
            doc["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            for claim in doc["spec"].get("volumeClaimTemplates", []):
                claim.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _set_image(docs: list[Doc], image: Doc) -> None:
    for doc in docs:
        if doc["kind"] not in TEMPLATED:
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def _set_namespace(docs: list[Doc], namespace: str) -> None:
    for doc in docs:
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = namespace
        elif doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = namespace
