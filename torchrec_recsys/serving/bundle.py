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
      manifest.sig           (with TORCHREC_RECSYS_BUNDLE_KEY set) HMAC-SHA256 of manifest.json

Sealed: the manifest lists exactly :data:`BUNDLE_FILES` (relative paths, each with its sha256
and size), the files the loader opens, and the loader opens nothing else. A registry copy
also holds ``added.json``, the seal the registry recorded (the manifest's sha256); the loader
checks the manifest against it, so editing a file and rewriting its manifest entry to match is
refused. With ``TORCHREC_RECSYS_BUNDLE_KEY`` set (any secret string), ``export-bundle`` signs
the manifest, and ``registry add`` and the loader refuse a bundle whose signature is missing
or wrong.

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
import hmac
import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import faiss
import numpy as np
import pydantic
import torch
from torch import nn

from torchrec_recsys.data.dataset import ItemCatalogue, RecDataset, UserTable
from torchrec_recsys.data.features import DenseFeature, FeatureSpec, SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.vocab import load_vocabularies, save_vocabularies
from torchrec_recsys.errors import ConfigError, DataError, UserError
from torchrec_recsys.files import atomic_directory, read_json, validated
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
from torchrec_recsys.serving.drift import check_training_statistics, training_statistics
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
SIGNATURE_FILE = "manifest.sig"
SEAL_FILE = "added.json"
"""The registry's record of a version (written by ``registry add`` into its copy)."""
KEY_ENV = "TORCHREC_RECSYS_BUNDLE_KEY"
"""Environment variable holding the HMAC key that signs and verifies bundle manifests."""
ROLE_FILES = (
    "model.pt",
    "architecture.json",
    "feature_spec.json",
    "vocab.json",
    "snapshot.json",
    "snapshot.pt",
)
INDEX_FOLDER = "index"
BUNDLE_FILES: tuple[str, ...] = (
    *(f"{role}/{name}" for role in ROLES for name in ROLE_FILES),
    f"{INDEX_FOLDER}/index.faiss",
    f"{INDEX_FOLDER}/item_ids.json",
    f"{INDEX_FOLDER}/metadata.json",
    STATS_FILE,
)
"""Every file the loader opens besides the manifest (and its signature and seal): exactly
the files a manifest must list."""
_SHA256 = Annotated[str, pydantic.StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_Positive = Annotated[int, pydantic.Field(gt=0)]
_Count = Annotated[int, pydantic.Field(ge=0)]
_Unix = Annotated[float, pydantic.Field(allow_inf_nan=False)]


class _FileEntry(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    sha256: _SHA256
    bytes: _Count


class _Manifest(pydantic.BaseModel):
    """The shape of ``manifest.json``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    schema_: Literal["torchrec_recsys.serving.bundle"] = pydantic.Field(alias="schema")
    format_version: Literal[1]
    created_unix: _Unix
    torch_version: str
    faiss_version: str
    quantization: Literal["fp32", "int8"]
    index_kind: Literal["flat", "ivf", "hnsw"]
    embedding_dim: _Positive
    items: _Positive
    users: _Count
    source: dict[str, Any]
    files: dict[str, _FileEntry]


class SealRecord(pydantic.BaseModel):
    """What a registry records of an added version (in its state and in ``added.json``)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    manifest_sha256: _SHA256
    """sha256 of the version's ``manifest.json`` as added."""
    added_unix: _Unix
    signed: bool = False
    """Whether its signature was verified when it was added (a key was set)."""


class _Added(SealRecord):
    from_: str = pydantic.Field(alias="from")


class _Architecture(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    kind: Literal["two_tower", "dlrm"]
    layers: list[_Positive] = []
    dense_arch_layers: list[_Positive] = []
    over_arch_layers: list[_Positive] = []
    quantization: Literal["fp32", "int8"] = "fp32"


class _Snapshot(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    user_ids: list[str]
    item_ids: list[str]
    titles: list[str]
    user_sparse: list[str]
    item_sparse: list[str]

    @pydantic.model_validator(mode="after")
    def _aligned(self) -> _Snapshot:
        if len(self.titles) != len(self.item_ids):
            raise ValueError(f"{len(self.titles)} titles for {len(self.item_ids)} item ids")
        return self


@dataclass(frozen=True)
class BundleSeal:
    """A verified bundle's manifest and what seals it."""

    manifest: dict[str, Any]
    manifest_sha256: str
    """sha256 of ``manifest.json`` (what a registry records at ``add``)."""
    signed: bool
    """The signature was verified (a key is set)."""
    has_signature: bool
    """The folder holds ``manifest.sig``."""


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
    def from_dict(cls, data: Any, where: str) -> Architecture:
        """The architecture in ``data`` (parsed ``architecture.json``), its shape checked.

        Raises:
            DataError: one line naming ``where`` and the bad field.
        """
        model = validated(_Architecture, data, where)
        if model.kind == "two_tower" and not model.layers:
            raise DataError(f"{where}: field 'layers' is empty; a two_tower needs its layers")
        if model.kind == "dlrm" and not (model.dense_arch_layers and model.over_arch_layers):
            raise DataError(f"{where}: a dlrm needs dense_arch_layers and over_arch_layers")
        return cls(
            kind=model.kind,
            layers=tuple(model.layers),
            dense_arch_layers=tuple(model.dense_arch_layers),
            over_arch_layers=tuple(model.over_arch_layers),
            quantization=model.quantization,
        )


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


def spec_from_dict(data: Any, where: str) -> FeatureSpec:
    """The inverse of ``FeatureSpec.to_dict``.

    Raises:
        DataError: ``data`` is not a FeatureSpec (one line naming ``where``).
    """
    try:
        return FeatureSpec(
            sparse=tuple(SparseFeature(**f) for f in data["sparse"]),
            dense=tuple(DenseFeature(**f) for f in data["dense"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise DataError(f"{where} is not a FeatureSpec ({type(exc).__name__}: {exc})") from None


def _read_json(path: Path) -> Any:
    return read_json(path, "bundle file")


def bundle_key() -> bytes | None:
    """The HMAC key from ``TORCHREC_RECSYS_BUNDLE_KEY`` (None when unset).

    Raises:
        ConfigError: the variable is set but empty.
    """
    value = os.environ.get(KEY_ENV)
    if value is None:
        return None
    if not value:
        raise ConfigError(f"{KEY_ENV} is set but empty; expected a secret key, or unset it")
    return value.encode()


def sign_manifest(manifest: bytes, key: bytes) -> str:
    """Hex HMAC-SHA256 of the manifest's bytes (what ``manifest.sig`` holds)."""
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


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
    path = folder / "snapshot.json"
    snapshot = validated(_Snapshot, _read_json(path), f"bundle file {str(path)!r}")
    meta = snapshot.model_dump()
    path = folder / "feature_spec.json"
    spec = spec_from_dict(_read_json(path), f"bundle file {str(path)!r}")
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

    With ``TORCHREC_RECSYS_BUNDLE_KEY`` set, ``manifest.sig`` (HMAC-SHA256 of the manifest)
    is written too.

    Raises:
        UserError: ``out`` exists (without ``overwrite``) or the models do not match roles.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"bundle folder {str(out)!r} already exists; expected a new path")
    key = bundle_key()  # read before any work: an empty key is refused at once
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
        written = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        if written != sorted(BUNDLE_FILES):  # the manifest seals exactly what the loader opens
            raise RuntimeError(f"bundle writer wrote {written}; expected {sorted(BUNDLE_FILES)}")
        files = {
            name: {"sha256": sha256_file(staging / name), "bytes": (staging / name).stat().st_size}
            for name in BUNDLE_FILES
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
        raw = json.dumps(manifest, indent=1).encode()
        (staging / MANIFEST_FILE).write_bytes(raw)
        if key is not None:
            (staging / SIGNATURE_FILE).write_text(sign_manifest(raw, key) + "\n")
    return out


# --------------------------------------------------------------------------- verify / load


def _inside(folder: Path, path: Path) -> bool:
    """``path`` resolves inside ``folder`` (no link leads out of the bundle)."""
    return path.resolve().is_relative_to(folder.resolve())


def _check_signature(folder: Path, raw: bytes) -> tuple[bool, bool]:
    """(verified, present) of ``manifest.sig``; refuse a missing or wrong one when a key is set."""
    path = folder / SIGNATURE_FILE
    present = path.is_file() and not path.is_symlink()
    key = bundle_key()
    if key is None:
        return False, present
    if not present:
        raise DataError(
            f"bundle {str(folder)!r} is not signed ({SIGNATURE_FILE} is missing) but {KEY_ENV} "
            "is set; expected a bundle exported with the same key"
        )
    found = path.read_bytes()[:256].decode("ascii", "replace").strip()
    if not hmac.compare_digest(found, sign_manifest(raw, key)):
        raise DataError(
            f"bundle {str(folder)!r} has a signature that does not match its manifest under "
            f"{KEY_ENV}; the bundle was changed or signed with another key"
        )
    return True, present


def inspect_bundle(
    folder: str | Path, manifest_sha256: str | None = None, check_files: bool = True
) -> BundleSeal:
    """Check a bundle without loading its models: the manifest's shape, its sha256 against
    ``manifest_sha256`` (and the registry's ``added.json``, if the folder holds one), the
    signature when a key is set, and (``check_files``) that it lists exactly
    :data:`BUNDLE_FILES`, each a regular file inside the folder with the recorded size and
    sha256.

    Raises:
        DataError: one sentence naming what does not verify.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"bundle {str(folder)!r} is not a folder")
    path = folder / MANIFEST_FILE
    if not path.is_file() or not _inside(folder, path):
        raise DataError(f"bundle {str(folder)!r} has no {MANIFEST_FILE}")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise DataError(f"bundle file {str(path)!r} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise DataError(
            f"{str(path)!r} is not a serving-bundle manifest "
            f"(schema {data.get('schema') if isinstance(data, dict) else None!r}, "
            f"expected {SCHEMA!r})"
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"bundle {str(folder)!r} has format version {data.get('format_version')!r}; "
            f"this server reads version {FORMAT_VERSION}"
        )
    manifest = validated(_Manifest, data, f"bundle manifest {str(path)!r}")
    recorded = [] if manifest_sha256 is None else [("the registry", manifest_sha256)]
    seal_path = folder / SEAL_FILE
    if seal_path.exists() or seal_path.is_symlink():
        added = validated(_Added, _read_json(seal_path), f"version record {str(seal_path)!r}")
        recorded.append((str(seal_path), added.manifest_sha256))
    for who, expected in recorded:
        if digest != expected:
            raise DataError(
                f"bundle manifest {str(path)!r} has sha256 {digest[:12]}..., but {who} "
                f"recorded {str(expected)[:12]}... when it was added; the bundle changed"
            )
    signed, present = _check_signature(folder, raw)
    if check_files:
        listed = set(manifest.files)
        missing = [name for name in BUNDLE_FILES if name not in listed]
        if missing:
            raise DataError(f"bundle {str(folder)!r} manifest lacks {missing[0]!r}")
        extra = sorted(listed - set(BUNDLE_FILES))
        if extra:
            raise DataError(
                f"bundle manifest {str(path)!r} lists {extra[0]!r}, which is not a bundle "
                "file; expected exactly the files the loader reads, as relative paths"
            )
        for name in BUNDLE_FILES:
            entry = manifest.files[name]
            file = folder / name
            if not _inside(folder, file):
                raise DataError(
                    f"bundle file {str(file)!r} resolves to {str(file.resolve())!r}, outside "
                    "the bundle; expected a plain file"
                )
            if not file.is_file():
                raise DataError(f"bundle file {str(file)!r} listed in the manifest is missing")
            size = file.stat().st_size
            if size != entry.bytes:
                raise DataError(
                    f"bundle file {str(file)!r} has {size} bytes, but the manifest records "
                    f"{entry.bytes}; the file is corrupt or changed"
                )
            found = sha256_file(file)
            if found != entry.sha256:
                raise DataError(
                    f"bundle file {str(file)!r} has sha256 {found[:12]}..., but the manifest "
                    f"records {entry.sha256[:12]}...; the file is corrupt or changed"
                )
        for role, kind in ROLES.items():
            arch_path = folder / role / "architecture.json"
            arch = Architecture.from_dict(_read_json(arch_path), f"bundle file {str(arch_path)!r}")
            if arch.kind != kind:
                raise DataError(
                    f"bundle {str(folder)!r}: {role} is a {arch.kind!r}; expected {kind!r}"
                )
            spec_path = folder / role / "feature_spec.json"
            spec_from_dict(_read_json(spec_path), f"bundle file {str(spec_path)!r}")
    return BundleSeal(manifest=data, manifest_sha256=digest, signed=signed, has_signature=present)


def verify_bundle(folder: str | Path, manifest_sha256: str | None = None) -> dict[str, Any]:
    """Check a bundle without loading its models (see :func:`inspect_bundle`).

    Returns:
        The manifest.

    Raises:
        DataError: one sentence naming what does not verify.
    """
    return inspect_bundle(folder, manifest_sha256).manifest


def load_bundle(folder: str | Path, manifest_sha256: str | None = None) -> ServingBundle:
    """Verify and load a bundle: models on CPU in eval mode, index, snapshots. Only the files
    of :data:`BUNDLE_FILES` (checked against the manifest first) are opened.

    Args:
        folder: the bundle (or a registry version folder).
        manifest_sha256: the manifest's sha256 the registry recorded at ``add``.

    Raises:
        DataError: the bundle does not verify or its parts disagree (dims, catalogue).
    """
    folder = Path(folder)
    manifest = verify_bundle(folder, manifest_sha256)
    models = {}
    for role in ROLES:
        arch_path = folder / role / "architecture.json"
        arch = Architecture.from_dict(_read_json(arch_path), f"bundle file {str(arch_path)!r}")
        try:
            data = _load_snapshot(folder / role)
            module = build_module(data.spec, arch)
            state = torch.load(folder / role / "model.pt", weights_only=True)
            module.load_state_dict(state)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, EOFError,
                RuntimeError, pickle.UnpicklingError) as exc:  # fmt: skip
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DataError(
                f"{role} files in bundle {str(folder)!r} do not fit together or with its "
                f"architecture ({type(exc).__name__}: {first[:200]})"
            ) from None
        task = InferenceTask(module).eval()
        models[role] = BundleModel(task=task, data=data, architecture=arch)
    index = load_index(
        folder / INDEX_FOLDER,
        expected_dim=models["retriever"].architecture.layers[-1],
        expected_metric=METRIC,
    )
    missing = [i for i in index.item_ids if i not in models["ranker"].data.items.row_of]
    if missing:
        raise DataError(
            f"bundle {str(folder)!r}: indexed item {missing[0]!r} is not in the ranker's catalogue"
        )
    stats_path = folder / STATS_FILE
    stats = check_training_statistics(
        _read_json(stats_path), f"bundle file {str(stats_path)!r}", models["retriever"].data.spec
    )
    return ServingBundle(
        folder=folder,
        manifest=manifest,
        retriever=models["retriever"],
        ranker=models["ranker"],
        index=index,
        stats=stats,
        online=OnlineFeatures.build(models["retriever"], models["ranker"], index),
    )
