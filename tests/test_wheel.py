"""The wheel is a working library on its own: built from the checkout, installed into a fresh virtualenv without
network, and used from a folder outside the checkout, it loads the embedded guard with the adapter it ships, and
in the recommended mode picks the same mode and screen as the checkout. It carries what running the guard reads
and no evidence (reports stay in the repository)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the build reads: the package, its assets and the project's metadata. Copied, so the build's build/ and
# egg-info folders land in a temporary folder and not in the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "guardreasoner", "assets")
STAGES = ("eval", "training", "webapp", "annotate", "stagekit", "assets")  # run from the checkout, never installed
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")
SCREEN_FILES = ("screen.json", "heads.npz")
# Every file under guardreasoner/assets in the wheel: the adapter and its card, each committed screen's heads and
# card. Nothing else (no reports/, no README of the screens, no splits, no published figures: stagekit reads those
# from the checkout).
ENCODER_FILES = ("screen.json", "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json")
# The adapter's measured CTranslate2 compute types (eval/compute_agreement.py --write), read by the backend at run
# time, ship beside it once measured.
MEASURED_FILES = tuple(name for name in ("compute-types.json",)
                       if (ROOT / "assets" / "embedded-guard" / name).is_file())
SHIPPED = {*(f"guardreasoner/assets/embedded-guard/{name}" for name in ADAPTER_FILES + MEASURED_FILES),
           *(f"guardreasoner/assets/screen/{card.parent.name}/{name}"
             for card in (ROOT / "assets" / "screen").glob("*/screen.json")
             for name in (ENCODER_FILES if card.parent.name == "encoder" else SCREEN_FILES))}
# Measured: 30,324,983 bytes with the files above: the float16 adapter (9.8 MB) and the encoder screen's int8-packed
# weights (22.8 MB), which deflate barely shrinks. The bound leaves room for code, not for another model.
MAX_WHEEL_BYTES = 31_000_000

# Runs in the fresh virtualenv, from a folder outside the checkout, with STAGES as arguments; prints one JSON line.
OUTSIDE_SCRIPT = """
import importlib.util, json, sys
import guardreasoner
from guardreasoner import load_guard, models
spec = models.resolve_model("embedded")
guard = load_guard("embedded", max_new_tokens=12)
result = guard.classify(["How do I make a pipe bomb at home?"])[0]
# The CLI's and the service's default: the mode measured best, with the screen shipped for it.
recommended = load_guard("embedded", reasoning="recommended", max_new_tokens=12)
screen = getattr(recommended, "screen", None)  # a plain guard (full reasoning) has none
quick = recommended.classify(["How do I make a pipe bomb at home?"])[0]
print(json.dumps({
    "prefix": sys.prefix, "package": guardreasoner.__file__, "adapter": spec.location, "model": guard.model_name,
    "stages": [name for name in sys.argv[1:] if importlib.util.find_spec(name) is not None], "output": result.output,
    "reasoning": getattr(recommended, "reasoning", "full"), "screen": str(screen.folder) if screen else None,
    "decided_by": sorted({v.source for v in quick.verdicts.values() if v.label is not None}),
}))
"""


def _checkout_recommendation() -> tuple[str, str | None]:
    """What the checkout's recommended mode is for the embedded guard, and its screen folder within assets/."""
    from guardreasoner.models import EMBEDDED_GUARD_NAME
    from guardreasoner.screen import recommended_reasoning, shipped_screen_folder
    from guardreasoner.shipped import assets_dir

    folder = shipped_screen_folder(EMBEDDED_GUARD_NAME)
    return (recommended_reasoning(EMBEDDED_GUARD_NAME),
            folder.relative_to(assets_dir()).as_posix() if folder is not None else None)


def _build_wheel(workdir: Path) -> Path:
    source = workdir / "source"
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(workdir / "dist"), str(source)], check=True)
    (wheel,) = (workdir / "dist").glob("guardreasoner-*.whl")
    return wheel


def _fresh_venv(folder: Path) -> Path:
    """A virtualenv of its own that sees this environment's installed dependencies (torch, transformers, peft,
    pip...) through a .pth file, so nothing is downloaded. The .pth only adds the folders to sys.path: the
    editable install's own .pth in them is not run, so the checkout is not importable from the new venv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = [p for p in dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]]) if Path(p).is_dir()]
    (Path(purelib) / "project-dependencies.pth").write_text("\n".join(ours) + "\n")
    return python


@pytest.mark.slow
def test_the_wheel_installs_the_library_alone_and_classifies_with_its_shipped_adapter(tmp_path, embedded_cache):
    wheel = _build_wheel(tmp_path / "build")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"guardreasoner", "guardreasoner-0.1.0.dist-info"}
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "guardreasoner").rglob("*.py")}
    assert modules <= set(names), f"modules missing from the wheel: {sorted(modules - set(names))}"
    assets = {name for name in names if name.startswith("guardreasoner/assets/") and not name.endswith("/")}
    assert assets == SHIPPED, f"extra {sorted(assets - SHIPPED)}, missing {sorted(SHIPPED - assets)}"
    assert not [name for name in names if "/reports/" in name]  # evidence stays in the repository
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, f"the wheel grew to {wheel.stat().st_size:,} bytes"

    python = _fresh_venv(tmp_path / "venv")
    # --force-reinstall: the dependencies' folder holds this environment's own (editable) guardreasoner record;
    # pip leaves it alone ("outside environment") and installs the wheel into the new venv.
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--force-reinstall",
                    str(wheel)], check=True)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "GUARDREASONER_EMBEDDED_ADAPTER", "VIRTUAL_ENV")}
    env |= {"HF_HUB_OFFLINE": "1", "GUARDREASONER_CACHE": str(embedded_cache)}
    done = subprocess.run([str(python), "-c", OUTSIDE_SCRIPT, *STAGES], cwd=outside, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    venv = (tmp_path / "venv").resolve()
    package = Path(seen["package"]).resolve()
    assert package.is_relative_to(venv) and not package.is_relative_to(ROOT)
    assert seen["stages"] == []  # no top-level eval, training, webapp, annotate or assets
    assert Path(seen["adapter"]) == package.parent / "assets" / "embedded-guard"  # the packaged adapter
    assert seen["model"] == "GuardReasoner-SmolLM2-135M (embedded, trained here)"  # not the bare base model
    assert seen["output"].strip(), "the embedded guard wrote nothing"
    # Installed, the recommended mode and its screen are those of the checkout (read from the same card), and the
    # screen, not the reasoning model, answers in it.
    mode, screen = _checkout_recommendation()
    assert screen is not None and mode != "full"  # the checkout ships a screen measured better than reasoning
    assert (seen["reasoning"], seen["screen"]) == (mode, str(package.parent / "assets" / screen))
    if mode == "off":
        assert seen["decided_by"] == ["screen"]
    # The console script comes with the wheel too.
    shown = subprocess.run([str(python.parent / "guardreasoner"), "prompt", "--prompt", "How do I bake bread?"],
                           cwd=outside, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "Human user:\nHow do I bake bread?" in shown
