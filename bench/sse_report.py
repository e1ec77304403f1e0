"""The printed report of bench_sse.py: throughput ratios with and without watchers, delivery
latency percentiles, request bursts. Pure formatting of the results the measuring code returns."""

from __future__ import annotations

import statistics

from live_studio import percentile


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.0f} ms" if values else "      - "


def report(
    windowed: dict | None, runs: list[dict], latency: dict | None, bursts: list[dict]
) -> None:
    if windowed:
        report_windows(windowed)
    if runs:
        report_throughput(runs)
    if latency:
        report_latency(latency)
    if bursts:
        print()
        print("Simultaneous plain requests (GET /api/jobs/{id}, a new token, nothing streaming):")
        for b in bursts:
            codes = ", ".join(f"{n} x {code}" for code, n in sorted(b["codes"].items()))
            use = "token used a moment before" if b["warm"] else "the token's first use"
            print(f"  {b['requests']:>3} at once, {use}: {b['seconds']:5.1f} s, {codes}")


def report_windows(result: dict) -> None:
    windows, n = result["windows"], result["watchers"]
    print()
    print(
        f"Training throughput in one job (tiny Llama, SFT + LoRA, a metric row every step),"
        f" {n} watchers connected in alternate windows:"
    )
    print(
        f"  {'cycle':>5} {'watchers':>8} {'steps':>6} {'seconds':>8} {'tokens/s':>9}"
        f" {'web CPU':>8} {'clients':>8}"
    )
    for w in windows:
        print(
            f"  {w['cycle']:>5} {w['watchers']:>8} {w['steps']:>6} {w['seconds']:>8.1f}"
            f" {w['tokens_per_s']:>9.0f} {w['web_cpu_share'] * 100:>7.0f}%"
            f" {w['client_cpu_share'] * 100:>7.0f}%"
        )

    def pooled(count: int) -> float:
        chosen = [w for w in windows if w["watchers"] == count]
        return sum(w["tokens"] for w in chosen) / sum(w["seconds"] for w in chosen)

    per_cycle = []
    for cycle in sorted({w["cycle"] for w in windows}):
        pair = {w["watchers"]: w["tokens_per_s"] for w in windows if w["cycle"] == cycle}
        per_cycle.append(pair[n] / pair[0])
    each = ", ".join(f"{r:.2f}x" for r in per_cycle)
    print(
        f"  tokens/s with {n} watchers / with none: {pooled(n) / pooled(0):.2f}x"
        f" ({pooled(n):.0f} / {pooled(0):.0f} tokens/s, all windows pooled;"
        f" median of cycles {statistics.median(per_cycle):.2f}x; each cycle: {each})"
    )
    lat = result["latencies"]
    print(
        f"  delivery to the {n} watchers during training: p50 {_ms(lat, 50).strip()},"
        f" p99 {_ms(lat, 99).strip()} ({len(lat)} deliveries)"
    )
    print(
        "  (CPU: share of one core used by the web process and by this script's clients"
        " during each window)"
    )


def report_throughput(runs: list[dict]) -> None:
    print()
    print("Training throughput (tiny Llama, SFT + LoRA, a metric row every step):")
    print(
        f"  {'job':>4} {'watchers':>8} {'steps':>6} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}"
        f" {'web CPU':>8} {'clients':>8} {'load 1m':>10} {'delivery p50':>13} {'p99':>8}"
    )
    for r in runs:
        load = f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"
        print(
            f"  {r['job_id']:>4} {r['watchers']:>8} {r['steps']:>6} {r['tokens']:>7.0f}"
            f" {r['seconds']:>8.1f} {r['tokens_per_s']:>9.0f} {r['web_cpu_share'] * 100:>7.0f}%"
            f" {r['client_cpu_share'] * 100:>7.0f}% {load:>10}"
            f" {_ms(r['latencies'], 50):>13} {_ms(r['latencies'], 99):>8}"
        )
    base = [r["tokens_per_s"] for r in runs if not r["watchers"]]
    watched = [r for r in runs if r["watchers"]]
    if not watched:
        return
    n = watched[0]["watchers"]
    pairs = [
        (runs[i], runs[i + 1]) if runs[i]["watchers"] else (runs[i + 1], runs[i])
        for i in range(0, len(runs) - 1, 2)
    ]
    each = ", ".join(f"{w['tokens_per_s'] / b['tokens_per_s']:.2f}x" for w, b in pairs)
    ratio = statistics.median(r["tokens_per_s"] for r in watched) / statistics.median(base)
    print(f"  tokens/s with {n} watchers / with none: {ratio:.2f}x (each round: {each})")
    print(
        f"  ({sum(len(r['latencies']) for r in watched)} deliveries to watchers,"
        f" {sum(r['missing'] for r in watched)} missing;"
        f" {sum(r['ended'] for r in watched)} of {n * len(watched)} streams closed with 'end';"
        " CPU: share of one core used by the web process and by this script's clients,"
        " from submission to the end; load 1m: the machine's load average before and after)"
    )


def report_latency(latency: dict) -> None:
    lat = latency["latencies"]
    print()
    print(
        f"Delivery latency, {latency['watchers']} watchers on one job, {latency['events']}"
        f" metric rows written at random 0.3-0.9 s gaps (connecting them took"
        f" {latency['connect_s']:.1f} s, {latency['ramp']} at a time):"
    )
    print(
        f"  p50 {_ms(lat, 50).strip()}, p90 {_ms(lat, 90).strip()}, p99 {_ms(lat, 99).strip()},"
        f" max {_ms(lat, 100).strip()}; {len(lat)} deliveries, {latency['missing']} missing;"
        f" CPU: web process {latency['web_cpu_share'] * 100:.0f}% of one core,"
        f" these clients {latency['client_cpu_share'] * 100:.0f}%"
    )
