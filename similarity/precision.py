"""The compute precision of a backbone: bf16 where the CPU does it natively, and how Keras builds under it.

Keras is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import keras

Precision = Literal["float32", "bfloat16"]
# What BACKBONE_PRECISION accepts: "auto" picks bfloat16 where the CPU computes it natively.
PRECISION_SETTINGS: tuple[str, ...] = ("auto", "float32", "bfloat16")
# /proc/cpuinfo flags of x86 CPUs with native bf16 matrix maths (oneDNN uses them; without
# them TensorFlow emulates bf16, which is slower than float32).
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
# The Keras dtype policy each precision builds the feature model under.
DTYPE_POLICIES: dict[str, str] = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def read_cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The flags every processor in a /proc/cpuinfo lists; empty where it cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    per_cpu = [
        frozenset(value.split())
        for key, sep, value in (line.partition(":") for line in text.splitlines())
        if sep and key.strip() == "flags"
    ]
    # Only what all of them have: a worker may be scheduled on any.
    return frozenset.intersection(*per_cpu) if per_cpu else frozenset()


def cpu_bf16_flags(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """Which of BF16_CPU_FLAGS this CPU has (empty: no native bf16)."""
    flags = read_cpu_flags(cpuinfo)
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)


def cpu_supports_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether the CPU computes bf16 natively (avx512_bf16 or amx_bf16 in /proc/cpuinfo)."""
    return bool(cpu_bf16_flags(cpuinfo))


def resolve_precision(setting: str) -> Precision:
    """Turn "auto" | "float32" | "bfloat16" into the precision to run the backbone in.

    "auto" is bfloat16 where cpu_supports_bf16() and float32 elsewhere; the others are forced.
    """
    if setting == "auto":
        return "bfloat16" if cpu_supports_bf16() else "float32"
    if setting == "float32":
        return "float32"
    if setting == "bfloat16":
        return "bfloat16"
    raise ValueError(f"Unknown backbone precision {setting!r}; use one of: {', '.join(PRECISION_SETTINGS)}.")


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Keras' global dtype policy set to policy inside the block, the previous one restored after."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_outputs(model: keras.Model) -> keras.Model:
    """The model with a float32 cast after its (bf16) output, so callers always get float32."""
    import keras

    outputs = keras.layers.Activation("linear", dtype="float32", name="to_float32")(model.output)
    return keras.Model(model.inputs, outputs, name=model.name)
