"""What the GPU check measured per run, and how it prints it."""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1024**2


@dataclass
class RunResult:
    name: str
    status: str = "not run"
    job_id: int | None = None
    steps: int = 0
    tokens: float | None = None
    tokens_per_s: float | None = None
    run_tokens_per_s: float | None = None
    wall_s: float | None = None
    peak_allocated: int | None = None
    peak_reserved: int | None = None
    smi_peak_mib: float | None = None
    amp: str = "?"
    compute_dtype: str = "?"
    attention: str = "?"
    resolved: str = "?"  # what the run chose, from its trainer config (worker.devices)
    expected: dict = field(default_factory=dict)
    error: str | None = None


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f}"


def print_run(r: RunResult) -> None:
    print(
        f"\n== {r.name}: {r.status} (job {r.job_id}, {r.steps} steps, "
        f"{fmt(r.wall_s, '.1f')} s from start to finish)",
        flush=True,
    )
    if r.error:
        print(f"   error: {r.error[:800]}")
    print(
        f"   tokens/s: {fmt(r.tokens_per_s)} steady ({fmt(r.tokens)} tokens in all; "
        f"{fmt(r.run_tokens_per_s)} over the whole run with loading)"
    )
    print(
        f"   peak memory: {mib(r.peak_allocated)} MiB allocated, {mib(r.peak_reserved)} MiB "
        f"reserved (torch, in the training process); nvidia-smi: {fmt(r.smi_peak_mib)} MiB "
        "over the baseline"
    )
    print(
        f"   precision: AMP {r.amp}; attention computed in {r.compute_dtype}; "
        f"attention kernel: {r.attention}"
    )
    print(f"   resolved by the run: {r.resolved}")


def print_table(results: list[RunResult], expected: dict, model_label: str) -> None:
    header = (
        "run",
        "status",
        "steps",
        "tok/s",
        "tok/s(run)",
        "peak alloc MiB",
        "peak rsrv MiB",
        "smi MiB",
        "AMP",
        "dtype",
        "attention",
    )
    rows = [
        (
            r.name,
            r.status,
            str(r.steps),
            fmt(r.tokens_per_s),
            fmt(r.run_tokens_per_s),
            mib(r.peak_allocated),
            mib(r.peak_reserved),
            fmt(r.smi_peak_mib),
            r.amp if len(r.amp) < 12 else "none",
            r.compute_dtype,
            r.attention,
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "+".join("-" * (w + 2) for w in widths)
    print("\n" + "=" * len(line))
    print(f"GPU check summary - model: {model_label}")
    device = expected.get("device", "?")
    print(
        f"device: {device} ({expected.get('device_kind', '?')}, capability "
        f"{expected.get('compute_capability')}, {expected.get('memory_gib', '?')} GiB); "
        f"issue-12 rules resolve precision auto -> {expected.get('precision')}, attention -> "
        f"{expected.get('attn_implementation')}"
    )
    print(line)
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(line, flush=True)
