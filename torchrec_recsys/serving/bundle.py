"""The serving bundle: everything the service needs, in one verified folder.

    bundle/
      manifest.json          schema + format version, source runs, sha256 + size of every file
      retriever/             the two-tower (query tower used online, item tower for the index)
        model.pt             state dict (fp32, or int8 tables after quantize_inference_model)
        architecture.json    how to rebuild the module: kind + layer sizes + quantization
        feature_spec.json    the FeatureSpec the model reads
        vocab.json           ID vocabularies (row 0 = OOV)
        snapshot.json        user ids, item ids, item titles
        snapshot.pt          user features as of training end (attributes, recent history,
                             training items to exclude), item features, as jagged tensors
      ranker/                the DLRM, same files
      index/                 FAISS index + id map (retrieval.faiss_index.save_index)
      training_stats.json    bucketed distributions of the query features over the training
                             traffic (each training example's user, as served), for drift

Models are stored as state dicts and rebuilt from the FeatureSpec with the package's own
builders (``models/``), so the service runs exactly the trained code. One format serves both
precisions: on this pin set (torch 2.13, torchrec 1.8) ``torch.jit.script`` + save + load of
the fp32 two-tower and DLRM works (identical outputs), but the int8 models do not script
(TorchRec's quantized EmbeddingBagCollection fails with "getattr's second argument must be a
string literal" / "Can't redefine method: __device_getter"). With ``quantization="int8"``
the embedding tables are converted with TorchRec's ``quantize_inference_model`` (int8 rows +
per-row scale/bias) before saving; the FAISS index always holds fp32 item-tower embeddings.

The server reads only this folder, never the raw training files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from torch import nn

from torchrec_recsys.data.dataset import ItemCatalogue, RecDataset, UserTable
from torchrec_recsys.data.features import DenseFeature, FeatureSpec, SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.vocab import load_vocabularies, save_vocabularies
from torchrec_recsys.errors import ConfigError, DataError, UserError
from torchrec_recsys.files import atomic_directory
from torchrec_recsys.models.dlrm import build_dlrm
from torchrec_recsys.models.two_tower import TwoTower
from torchrec_recsys.retrieval.faiss_index import (
    IndexSpec,
    LoadedIndex,
    build_index,
    load_index,
    save_index,
)
from torchrec_recsys.retrieval.predict import TrainedTask, item_embeddings
from torchrec_recsys.serving.drift import training_statistics
from torchrec_recsys.serving.online import OnlineFeatures

SCHEMA = "torchrec_recsys.serving.bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
STATS_FILE = "training_stats.json"
MODEL_KINDS = ("two_tower", "dlrm")
QUANTIZATIONS = ("fp32", "int8")
ROLES = {"retriever": "two_tower", "ranker": "dlrm"}
METRIC = "cosine"  # the two-tower scores L2-normalised embeddings by inner product
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Architecture:
    """How to rebuild a model module from its FeatureSpec."""

    kind: str
    """``two_tower`` or ``dlrm``."""
    layers: tuple[int, ...] = ()
    """Two-tower tower layers (the last is the embedding dim)."""
    dense_arch_layers: tuple[int, ...] = ()
    """DLRM bottom MLP."""
    over_arch_layers: tuple[int, ...] = ()
    """DLRM top MLP."""
    quantization: str = "fp32"
    """``fp32`` or ``int8`` (embedding tables only)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "layers": list(self.layers),
            "dense_arch_layers": list(self.dense_arch_layers),
            "over_arch_layers": list(self.over_arch_layers),
            "quantization": self.quantization,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Architecture:
        try:
            arch = cls(
                kind=str(data["kind"]),
                layers=tuple(int(x) for x in data.get("layers", ())),
                dense_arch_layers=tuple(int(x) for x in data.get("dense_arch_layers", ())),
                over_arch_layers=tuple(int(x) for x in data.get("over_arch_layers", ())),
                quantization=str(data.get("quantization", "fp32")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where} is not a model architecture ({exc!r})") from None
        if arch.kind not in MODEL_KINDS or arch.quantization not in QUANTIZATIONS:
            raise DataError(
                f"{where} has kind {arch.kind!r} / quantization {arch.quantization!r}; "
                f"expected one of {MODEL_KINDS} / {QUANTIZATIONS}"
            )
        return arch


class InferenceTask(nn.Module):
    """A model behind ``.model``, the shape ``retrieval.predict`` expects of a task."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


@dataclass
class BundleModel:
    """One model of a loaded bundle: task + the feature snapshot (a ``TrainedTask``)."""

    task: nn.Module
    data: RecDataset
    architecture: Architecture


@dataclass
class ServingBundle:
    """A loaded, verified bundle."""

    folder: Path
    manifest: dict[str, Any]
    retriever: BundleModel
    ranker: BundleModel
    index: LoadedIndex
    stats: dict[str, Any]
    online: OnlineFeatures
    """Every user's and item's features, taken once for the per-request path."""


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def spec_from_dict(data: dict[str, Any], where: str) -> FeatureSpec:
    """The inverse of ``FeatureSpec.to_dict``."""
    try:
        return FeatureSpec(
            sparse=tuple(SparseFeature(**f) for f in data["sparse"]),
            dense=tuple(DenseFeature(**f) for f in data["dense"]),
        )
    except (KeyError, TypeError, ConfigError) as exc:
        raise DataError(f"{where} is not a FeatureSpec ({exc})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"bundle file {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"bundle file {str(path)!r} is not valid JSON ({exc})") from None


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def build_module(spec: FeatureSpec, arch: Architecture) -> nn.Module:
    """The model module of ``arch`` on CPU, in eval mode (int8: tables quantized)."""
    if arch.kind == "two_tower":
        model: nn.Module = TwoTower(spec, list(arch.layers), "cpu", "cpu")
    else:
        model = build_dlrm(
            spec, list(arch.dense_arch_layers), list(arch.over_arch_layers), "cpu", "cpu"
        )
    model.eval()
    if arch.quantization == "int8":
        model = quantize(model)
    return model


def quantize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose EmbeddingBagCollections hold int8 rows (TorchRec inference)."""
    from torchrec.inference.modules import quantize_inference_model

    return quantize_inference_model(copy.deepcopy(model)).eval()


# --------------------------------------------------------------------------- snapshot


def _save_snapshot(folder: Path, data: RecDataset) -> None:
    """User + item features of ``data`` (no training examples) as JSON + tensors."""
    tensors: dict[str, torch.Tensor] = {
        "users.dense": data.users.dense,
        "users.train_items.offsets": data.users.train_items.offsets,
        "users.train_items.values": data.users.train_items.values,
        "items.dense": data.items.dense,
        "items.train_counts": data.items.train_counts,
        "items.cold": data.items.cold,
    }
    for side, columns in (("users", data.users.sparse), ("items", data.items.sparse)):
        for name, column in columns.items():
            tensors[f"{side}.sparse.{name}.offsets"] = column.offsets
            tensors[f"{side}.sparse.{name}.values"] = column.values
    torch.save({k: v.contiguous().clone() for k, v in tensors.items()}, folder / "snapshot.pt")
    _write_json(
        folder / "snapshot.json",
        {
            "name": data.name,
            "user_ids": data.user_ids,
            "item_ids": data.items.item_ids,
            "titles": data.items.texts,
            "user_sparse": list(data.users.sparse),
            "item_sparse": list(data.items.sparse),
        },
    )
    _write_json(folder / "feature_spec.json", data.spec.to_dict())
    save_vocabularies(folder / "vocab.json", data.vocabs)


def _load_snapshot(folder: Path) -> RecDataset:
    meta = _read_json(folder / "snapshot.json")
    spec = spec_from_dict(_read_json(folder / "feature_spec.json"), str(folder))
    t = torch.load(folder / "snapshot.pt", weights_only=True)

    def column(prefix: str) -> JaggedColumn:
        return JaggedColumn(offsets=t[f"{prefix}.offsets"], values=t[f"{prefix}.values"])

    items = ItemCatalogue(
        item_ids=list(meta["item_ids"]),
        texts=list(meta["titles"]),
        sparse={k: column(f"items.sparse.{k}") for k in meta["item_sparse"]},
        dense=t["items.dense"],
        train_counts=t["items.train_counts"],
        cold=t["items.cold"],
    )
    users = UserTable(
        sparse={k: column(f"users.sparse.{k}") for k in meta["user_sparse"]},
        dense=t["users.dense"],
        train_items=column("users.train_items"),
    )
    return RecDataset(
        spec=spec,
        vocabs=load_vocabularies(folder / "vocab.json"),
        splits={},
        items=items,
        users=users,
        user_ids=list(meta["user_ids"]),
        name=str(meta["name"]),
    )


# --------------------------------------------------------------------------- write


def write_bundle(
    out: str | Path,
    retriever: TrainedTask,
    retriever_arch: Architecture,
    ranker: TrainedTask,
    ranker_arch: Architecture,
    index_spec: IndexSpec,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a serving bundle to ``out`` atomically (a reader sees all of it or nothing).

    Args:
        out: bundle folder to create.
        retriever: trained two-tower (plain CPU task) and its dataset; the item tower embeds
            the catalogue into the index, the training split gives the drift statistics.
        retriever_arch, ranker_arch: how to rebuild each model (and whether int8).
        ranker: trained DLRM and its dataset.
        index_spec: FAISS index kind and parameters.
        source: provenance for the manifest (run dirs, checkpoints, steps).
        overwrite: replace an existing folder.

    Raises:
        UserError: ``out`` exists (without ``overwrite``) or the models do not match roles.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"bundle folder {str(out)!r} already exists; expected a new path")
    if retriever_arch.kind != "two_tower" or ranker_arch.kind != "dlrm":
        raise UserError(
            f"a bundle needs a two_tower retriever and a dlrm ranker, got "
            f"{retriever_arch.kind!r} and {ranker_arch.kind!r}"
        )
    embeddings = item_embeddings(retriever.task, retriever.data).numpy().astype(np.float32)
    start = time.perf_counter()
    index = build_index(embeddings, index_spec)  # [I, D] item-tower embeddings
    build_seconds = time.perf_counter() - start
    # the reference traffic: each training example's user, with the features the service
    # builds for that user (as of training end), so unshifted live traffic matches it
    data = retriever.data
    stats = training_statistics(data.user_table(data.splits["train"].user_rows), data.spec)
    with atomic_directory(out) as staging:
        for role, trained, arch in (
            ("retriever", retriever, retriever_arch),
            ("ranker", ranker, ranker_arch),
        ):
            folder = staging / role
            folder.mkdir()
            model = trained.task.model  # type: ignore[union-attr]
            if arch.quantization == "int8":
                model = quantize(model)
            torch.save(model.state_dict(), folder / "model.pt")
            _write_json(folder / "architecture.json", arch.to_dict())
            _save_snapshot(folder, trained.data)
        save_index(
            staging / "index",
            index,
            retriever.data.items.item_ids,
            index_spec,
            {"model": "two_tower"},
            build_seconds=build_seconds,
        )
        _write_json(staging / STATS_FILE, stats)
        files = {
            str(p.relative_to(staging)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "schema": SCHEMA,
            "format_version": FORMAT_VERSION,
            "created_unix": time.time(),
            "torch_version": torch.__version__,
            "faiss_version": faiss.__version__,
            "quantization": ranker_arch.quantization,
            "index_kind": index_spec.kind,
            "embedding_dim": int(embeddings.shape[1]),
            "items": len(retriever.data.items),
            "users": len(retriever.data.user_ids),
            "source": source or {},
            "files": files,
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return out


# --------------------------------------------------------------------------- verify / load


def verify_bundle(folder: str | Path) -> dict[str, Any]:
    """Check a bundle without loading its models: schema, files and their checksums.

    Returns:
        The manifest.

    Raises:
        DataError: one sentence naming what does not verify.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"bundle {str(folder)!r} is not a folder")
    manifest = _read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise DataError(
            f"{str(folder / MANIFEST_FILE)!r} is not a serving-bundle manifest "
            f"(schema {manifest.get('schema') if isinstance(manifest, dict) else None!r}, "
            f"expected {SCHEMA!r})"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"bundle {str(folder)!r} has format version {manifest.get('format_version')!r}; "
            f"this server reads version {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise DataError(f"{str(folder / MANIFEST_FILE)!r} lists no files")
    required = [
        f"{r}/{n}"
        for r in ROLES
        for n in (
            "model.pt",
            "architecture.json",
            "feature_spec.json",
            "vocab.json",
            "snapshot.json",
            "snapshot.pt",
        )
    ]
    required += ["index/index.faiss", STATS_FILE]
    missing = [name for name in required if name not in files]
    if missing:
        raise DataError(f"bundle {str(folder)!r} manifest lacks {missing[0]!r}")
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"bundle file {str(path)!r} listed in the manifest is missing")
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise DataError(
                f"bundle file {str(path)!r} has sha256 {digest[:12]}..., but the manifest "
                f"records {str(entry.get('sha256'))[:12]}...; the file is corrupt or changed"
            )
    for role, kind in ROLES.items():
        arch = Architecture.from_dict(
            _read_json(folder / role / "architecture.json"), f"{role}/architecture.json"
        )
        if arch.kind != kind:
            raise DataError(f"bundle {str(folder)!r}: {role} is a {arch.kind!r}; expected {kind!r}")
        spec_from_dict(_read_json(folder / role / "feature_spec.json"), f"{role}/feature_spec.json")
    return manifest


def load_bundle(folder: str | Path, verify: bool = True) -> ServingBundle:
    """Verify (optionally) and load a bundle: models on CPU in eval mode, index, snapshots.

    Raises:
        DataError: the bundle does not verify or its parts disagree (dims, catalogue).
    """
    folder = Path(folder)
    manifest = verify_bundle(folder) if verify else _read_json(folder / MANIFEST_FILE)
    models = {}
    for role in ROLES:
        arch = Architecture.from_dict(
            _read_json(folder / role / "architecture.json"), f"{role}/architecture.json"
        )
        data = _load_snapshot(folder / role)
        module = build_module(data.spec, arch)
        state = torch.load(folder / role / "model.pt", weights_only=True)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(
                f"{role} weights in {str(folder)!r} do not fit its architecture: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        task = InferenceTask(module).eval()
        models[role] = BundleModel(task=task, data=data, architecture=arch)
    index = load_index(
        folder / "index",
        expected_dim=models["retriever"].architecture.layers[-1],
        expected_metric=METRIC,
    )
    missing = [i for i in index.item_ids if i not in models["ranker"].data.items.row_of]
    if missing:
        raise DataError(
            f"bundle {str(folder)!r}: indexed item {missing[0]!r} is not in the ranker's catalogue"
        )
    return ServingBundle(
        folder=folder,
        manifest=manifest,
        retriever=models["retriever"],
        ranker=models["ranker"],
        index=index,
        stats=_read_json(folder / STATS_FILE),
        online=OnlineFeatures.build(models["retriever"], models["ranker"], index),
    )
