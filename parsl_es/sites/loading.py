"""Finding a site (shipped name or path), reading it, and applying ``--set`` overrides.

Overrides are applied to the raw YAML data before validation, so a value set
on the command line is checked exactly like one written in the file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from parsl_es.errors import UserError, allowed, did_you_mean, shown
from parsl_es.sites.spec import LocalProviderSpec, NodeTypeSpec, SiteSpec, SlurmProviderSpec
from parsl_es.yamlfile import exists, parse_mapping, parse_value, read_text, validation_error


def shipped_sites() -> dict[str, Path]:
    root = resources.files("parsl_es.site_configs")
    return {
        Path(e.name).stem: Path(str(e))
        for e in root.iterdir()
        if e.name.endswith((".yaml", ".yml"))
    }


def resolve_site_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or "/" in text or exists(path):
        return path
    sites = shipped_sites()
    if text in sites:
        return sites[text]
    raise UserError(
        f"unknown site {shown(text)}{did_you_mean(text, sites)}; shipped sites: {allowed(sites)} "
        "(or give the path of a site file)"
    )


def load_site(name_or_path: str | Path = "local", overrides: list[str] | None = None) -> SiteSpec:
    """Load a site by name or path, with ``--set key=value`` overrides applied."""
    path = resolve_site_path(name_or_path)
    text = read_text(path, "site file")
    data, lines = parse_mapping(text, path, "site file")
    for item in overrides or []:
        for loc in apply_override(data, item, path):
            # The file's lines no longer hold this value: no line rather than a wrong one.
            for known in [k for k in lines if k[: len(loc)] == loc]:
                del lines[known]
            lines[loc] = None
    try:
        spec = SiteSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, SiteSpec, path, lines) from None
    spec._source, spec._lines = str(path), lines
    return spec


def apply_override(data: dict[str, Any], item: str, source: Path | str) -> list[tuple]:
    """Apply one ``key=value`` to raw site data.

    ``node_types.gpu.provider.qos=debug`` sets one field; ``gpu.qos=debug``
    is the same with the node type first; a bare ``account=m1234`` sets the
    field wherever it applies: at the top of the site, or in every node type
    or its provider that has it. Values are YAML (``max_blocks=4`` is a number),
    checked like a file's. Returns the field paths set.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {shown(item)}: expected KEY=VALUE", file=source)
    parts = key.split(".")
    if not all(parts):
        raise UserError(f"--set {shown(key)}: a field name is empty", file=source)
    try:
        value = parse_value(raw.strip()) if raw.strip() else None
    except UserError as exc:
        raise UserError(f"--set {shown(item)}: {exc.message}", file=source) from None
    node_types = data.get("node_types")
    if not isinstance(node_types, dict):  # the file's own error, reported by validation
        node_types = {}
    if parts[0] in node_types and len(parts) > 1:
        parts = ["node_types", *parts]
    if (
        len(parts) == 3
        and parts[0] == "node_types"
        and parts[2] not in NodeTypeSpec.model_fields
        and parts[2] in SlurmProviderSpec.model_fields
    ):
        parts.insert(2, "provider")  # gpu.qos=debug: a provider field of node type gpu
    if len(parts) > 1:
        _set_path(data, parts, value, item, source)
        return [tuple(parts)]
    targets: list[tuple[dict, tuple]] = []
    if key in SiteSpec.model_fields:
        targets.append((data, ()))
    for nt_name, nt in node_types.items():
        if not isinstance(nt, dict):
            continue
        if key in NodeTypeSpec.model_fields:
            targets.append((nt, ("node_types", nt_name)))
        else:
            provider = nt.setdefault("provider", {})
            if not isinstance(provider, dict):
                continue
            kind = provider.get("kind", "local")
            model = SlurmProviderSpec if kind == "slurm" else LocalProviderSpec
            if key in model.model_fields:
                targets.append((provider, ("node_types", nt_name, "provider")))
    if not targets:
        fields = {
            *SiteSpec.model_fields,
            *NodeTypeSpec.model_fields,
            *SlurmProviderSpec.model_fields,
        }
        raise UserError(
            f"--set {shown(key)}: no such site field{did_you_mean(key, fields)}", file=source
        )
    for target, _ in targets:
        target[key] = value
    return [(*where, key) for _, where in targets]


def _set_path(data: dict, parts: list[str], value: Any, item: str, source: Path | str) -> None:
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise UserError(f"--set {shown(item)}: {shown(part)} is not a mapping", file=source)
        node = nxt
    node[parts[-1]] = value
