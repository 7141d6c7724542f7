"""Device detection through the torch seam: a fake mimicking torch.cuda's real functions, and the real CPU
torch."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from catimg.device import DeviceInfo, default_dtype, detect_device, device_class
from catimg.errors import DeviceError

GIB = 1024**3


@dataclass
class _Props:  # like torch.cuda.get_device_properties(i): _CudaDeviceProperties
    name: str
    total_memory: int
    major: int
    minor: int
    multi_processor_count: int = 132


class FakeCuda:
    """Mimics the torch.cuda functions catimg calls, with their real signatures."""

    def __init__(self, gpus: list[tuple[str, float, tuple[int, int], float]]) -> None:
        self.gpus = gpus  # (name, total GiB, capability, free GiB)

    def is_available(self) -> bool:
        return bool(self.gpus)

    def device_count(self) -> int:
        return len(self.gpus)

    def get_device_name(self, device: int | None = None) -> str:
        return self.gpus[device or 0][0]

    def get_device_properties(self, device: int) -> _Props:
        name, total, cap, _free = self.gpus[device]
        return _Props(name, int(total * GIB), cap[0], cap[1])

    def mem_get_info(self, device: int | None = None) -> tuple[int, int]:
        _name, total, _cap, free = self.gpus[device or 0]
        return int(free * GIB), int(total * GIB)

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        return self.gpus[0][2] >= (8, 0)


def fake_torch(gpus=(), mps: bool = False) -> SimpleNamespace:
    backends = SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps, is_built=lambda: mps))
    return SimpleNamespace(
        cuda=FakeCuda(list(gpus)),
        backends=backends,
        __version__="2.13.0+cu128",
        version=SimpleNamespace(cuda="12.8"),
    )


H100 = ("NVIDIA H100 80GB HBM3", 79.19, (9, 0), 78.5)
T4 = ("Tesla T4", 14.75, (7, 5), 14.2)


def test_cuda_detected_with_memory_capability_and_bf16() -> None:
    d = detect_device(None, torch_module=fake_torch([H100]))
    assert d.kind == "cuda" and d.index == 0 and d.torch_device == "cuda:0"
    assert d.name == "NVIDIA H100 80GB HBM3"
    assert d.total_memory_gb == pytest.approx(79.19, abs=0.01)
    assert d.free_memory_gb == pytest.approx(78.5, abs=0.01)
    assert d.capability == (9, 0) and d.bf16
    assert default_dtype(d) == "bf16"
    assert "cuda:0 NVIDIA H100" in d.describe() and "sm 9.0" in d.describe()


def test_cuda_index_override_and_fp16_without_bf16() -> None:
    d = detect_device("cuda:1", torch_module=fake_torch([H100, T4]))
    assert d.index == 1 and d.name == "Tesla T4" and d.torch_device == "cuda:1"
    t = detect_device("cuda", torch_module=fake_torch([T4]))
    assert not t.bf16 and default_dtype(t) == "fp16" and default_dtype(t, "bf16") == "fp16"


def test_missing_gpu_index_is_one_line() -> None:
    with pytest.raises(DeviceError) as err:
        detect_device("cuda:3", torch_module=fake_torch([H100, T4]))
    assert "2 CUDA device(s)" in str(err.value) and "cuda:0 to cuda:1" in str(err.value)
    assert "\n" not in str(err.value)


def test_cuda_requested_but_absent() -> None:
    with pytest.raises(DeviceError, match="no CUDA GPU.*--device cpu"):
        detect_device("cuda", torch_module=fake_torch([]))


def test_mps_and_fallbacks() -> None:
    d = detect_device(None, torch_module=fake_torch([], mps=True))
    assert d.kind == "mps" and d.torch_device == "mps" and default_dtype(d) == "fp16"
    assert detect_device(None, torch_module=fake_torch([])).kind == "cpu"
    with pytest.raises(DeviceError, match="MPS is not available"):
        detect_device("mps", torch_module=fake_torch([]))


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cpu:1", ""])
def test_bad_override(bad: str) -> None:
    from catimg.errors import ExitStatus, InputError

    with pytest.raises(InputError, match="not a device") as info:  # a bad option value: exit 2, not 5
        detect_device(bad or " ", torch_module=fake_torch([]))
    assert info.value.exit_code == ExitStatus.BAD_INPUT


def test_bad_device_option_exits_2_through_the_cli() -> None:
    from harness import run_cli

    for args in (
        ["models", "--device", "tpu"],
        ["explain", "x", "--device", "tpu"],
        ["doctor", "--device", "tpu"],
    ):
        code, _out, err = run_cli(*args)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and '--device "tpu" is not a device' in err


def test_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATIMG_DEVICE", "cpu")
    assert detect_device(None, torch_module=fake_torch([H100])).kind == "cpu"


def test_real_torch_on_this_machine() -> None:
    import torch

    d = detect_device()
    assert d.kind == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_dtype(detect_device("cpu")) == "fp32"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CPU-only build"):
            detect_device("cuda")


def test_device_class_ignores_index_and_separates_models() -> None:
    a = detect_device("cuda:0", torch_module=fake_torch([H100, H100]))
    b = detect_device("cuda:1", torch_module=fake_torch([H100, H100]))
    t = detect_device("cuda", torch_module=fake_torch([T4]))
    assert device_class(a) == device_class(b) == "cuda/nvidia-h100-80gb-hbm3"
    assert device_class(t) != device_class(a)
    assert device_class(detect_device("cpu")).startswith("cpu/")


def test_dtype_requests() -> None:
    cpu = DeviceInfo("cpu", None, "x", None, None, None, True, "cpu")
    assert default_dtype(cpu, "fp16") == "fp16"
    with pytest.raises(DeviceError):
        default_dtype(cpu, "int8")


def test_cli_device_error_is_one_line(tmp_path, tiny_sd_dir) -> None:
    import subprocess
    import sys

    toml = tmp_path / "models.toml"
    toml.write_text(f'[generators.t]\nsource = "{tiny_sd_dir}"\nwidth = 64\nheight = 64\n', encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "catimg", "bench", "--models", str(toml), "--device", "quantum"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2  # a bad option value (issue 10, item 15), not a device problem (5)
    assert r.stderr.strip().count("\n") == 0 and '--device "quantum" is not a device' in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------ the cached description


def test_lookup_caches_the_probe_in_a_real_file_and_invalidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first lookup probes (through the seam) and writes device.json; the next one reads it back without
    touching torch; another CUDA_VISIBLE_DEVICES, an old entry, a corrupt file or --refresh-device probe
    again."""
    import json
    import os
    import time
    from pathlib import Path

    from catimg.device import DEVICE_CACHE_MAX_AGE_S, device_cache_path, lookup_device

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    path = device_cache_path()
    assert path == Path(os.environ["CATIMG_CACHE_DIR"]) / "device.json" and not path.exists()
    first = lookup_device(None, torch_module=fake_torch([H100]))
    assert first.source == "probed" and first.info.name == H100[0] and first.info.free_memory_gb == 78.5
    assert path.is_file()

    class NoTorch:  # any attribute access means torch was asked
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"torch.{name} used although the description is cached")

    again = lookup_device(None, torch_module=NoTorch())
    assert again.source == "cached" and again.cached_at is not None
    assert (
        again.info.name == H100[0] and again.info.capability == (9, 0) and again.info.total_memory_gb == 79.19
    )
    assert again.info.free_memory_gb is None  # free memory changes: never cached
    assert "cached" in again.note("`catimg doctor --refresh-device`") and "--refresh-device" in again.note(
        "--refresh-device"
    )

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # other GPUs visible: the cached entry does not apply
    assert lookup_device(None, torch_module=fake_torch([T4])).info.name == T4[0]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert lookup_device(None, torch_module=NoTorch()).info.name == H100[0]  # both entries are kept
    assert (
        lookup_device("cuda:0", torch_module=fake_torch([T4])).source == "probed"
    )  # another --device, another key

    assert lookup_device(None, refresh=True, torch_module=fake_torch([T4])).source == "probed"
    assert lookup_device(None, torch_module=NoTorch()).info.name == T4[0]  # the refresh rewrote the entry

    doc = json.loads(path.read_text(encoding="utf-8"))
    for entry in doc["entries"].values():
        entry["at"] = time.time() - DEVICE_CACHE_MAX_AGE_S - 1
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert lookup_device(None, torch_module=fake_torch([H100])).source == "probed"  # too old
    path.write_text("{not json", encoding="utf-8")
    assert lookup_device(None, torch_module=fake_torch([H100])).source == "probed"  # corrupt: probe, rewrite
    assert lookup_device(None, torch_module=NoTorch()).source == "cached"


def test_lookup_needs_no_torch_for_cpu_or_without_a_gpu_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    from catimg import device as device_mod
    from catimg.device import device_cache_path, lookup_device

    assert lookup_device("cpu").source == "requested"
    monkeypatch.setattr(device_mod, "gpu_possible", lambda: False)
    found = lookup_device(None)
    assert found.source == "no-gpu" and found.info.kind == "cpu" and found.note("x") == ""
    assert not device_cache_path().exists()


def test_models_and_explain_skip_torch_once_the_device_is_known(tmp_path) -> None:
    """`catimg models` and a warm `explain` import no torch: on this machine either there is no GPU driver, or
    the first run probes and caches and the second says the description was cached."""
    import os
    import subprocess
    import sys

    from catimg.device import gpu_possible

    code = (
        "import sys\n"
        "from catimg.cli import main\n"
        "sys.argv = ['catimg', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n"
    )
    env = {**os.environ, "CATIMG_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for args in (["models"], ["explain", "a red cube"], ["models"], ["explain", "a red cube"]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        runs.append(r)
    for r in runs[2:]:
        assert r.stderr.strip().endswith("no torch"), r.stderr
        if gpu_possible():
            assert "cached" in r.stdout and "--refresh-device" in r.stdout


def test_models_and_doctor_say_the_description_was_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a GPU driver exists, models/doctor use the description a probe cached, say so and how to refresh
    (the driver is simulated; the cache file and the CLI are real)."""
    import json

    from harness import run_cli

    from catimg import device as device_mod
    from catimg.device import write_device_cache

    monkeypatch.setattr(device_mod, "gpu_possible", lambda: True)
    monkeypatch.delenv("CATIMG_DEVICE", raising=False)
    write_device_cache(None, detect_device("cuda:0", torch_module=fake_torch([H100])))
    code, out, err = run_cli("models")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "device: cuda:0 NVIDIA H100 80GB HBM3, 79.2 GB, sm 9.0, bf16 (cached" in flat
    assert "`catimg doctor --refresh-device` detects it again" in flat
    code, out, err = run_cli("doctor", "--json")
    doc = json.loads(out)
    assert doc["device_source"] == "cached" and doc["device"]["name"] == H100[0]
