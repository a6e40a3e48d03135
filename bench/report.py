#!/usr/bin/env python3
"""Turns raw load-generator output into records, and records into the comparison table.

    report.py record SCENARIO SERVER ROUND RAW_FILE CPU_TICKS CLK_TCK   -> one JSON line
    report.py table RECORDS.jsonl                                         -> Markdown table

Used by bench/compare.sh; standard library only.
"""

import json
import statistics
import sys


def parse_wrk(text):
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line[len("WRK_JSON "):])
            errors = sum(data[key] for key in data if key.startswith("errors_"))
            return {
                "requests": data["requests"],
                "seconds": data["duration_us"] / 1e6,
                "p50_ms": data["p50_us"] / 1000,
                "p99_ms": data["p99_us"] / 1000,
                "errors": errors,
            }
    raise SystemExit("no WRK_JSON line in wrk output:\n" + text)


def parse_autocannon(text):
    data = json.loads(text)
    errors = data.get("errors", 0) + data.get("timeouts", 0) + data.get("non2xx", 0)
    return {
        "requests": data["requests"]["total"],
        "seconds": data["duration"],
        "p50_ms": data["latency"]["p50"],
        "p99_ms": data["latency"]["p99"],
        "errors": errors,
    }


def record(scenario, server, round_number, raw_path, cpu_ticks, clock_ticks):
    with open(raw_path, encoding="utf-8") as raw:
        text = raw.read()
    result = parse_autocannon(text) if "autocannon" in scenario else parse_wrk(text)
    cpu_seconds = int(cpu_ticks) / int(clock_ticks)
    requests = max(result["requests"], 1)
    result.update(
        scenario=scenario,
        server=server,
        round=int(round_number),
        rps=result["requests"] / result["seconds"],
        cpu_us_per_request=cpu_seconds * 1e6 / requests,
        cpu_seconds=cpu_seconds,
    )
    print(json.dumps(result))


def table(records_path):
    with open(records_path, encoding="utf-8") as records_file:
        records = [json.loads(line) for line in records_file if line.strip()]
    groups = {}
    for entry in records:
        groups.setdefault((entry["scenario"], entry["server"]), []).append(entry)

    def median(scenario, server, key):
        entries = groups.get((scenario, server))
        if not entries:
            return None
        return statistics.median(entry[key] for entry in entries)

    scenarios = []
    for entry in records:
        if entry["scenario"] not in scenarios:
            scenarios.append(entry["scenario"])

    print("| scenario | server | req/s | p50 ms | p99 ms | errors | server CPU µs/req |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for scenario in scenarios:
        for server in ("video-server", "minihttp", "node"):
            if (scenario, server) not in groups:
                continue
            total_errors = sum(entry["errors"] for entry in groups[(scenario, server)])
            print(
                f"| {scenario} | {server} | {median(scenario, server, 'rps'):,.0f} "
                f"| {median(scenario, server, 'p50_ms'):.2f} | {median(scenario, server, 'p99_ms'):.2f} "
                f"| {total_errors} | {median(scenario, server, 'cpu_us_per_request'):.1f} |"
            )
    print()
    print("| scenario | req/s ratio (video-server / node) | CPU per request ratio (node / video-server) |")
    print("| --- | ---: | ---: |")
    for scenario in scenarios:
        ours_rps = median(scenario, "video-server", "rps")
        node_rps = median(scenario, "node", "rps")
        ours_cpu = median(scenario, "video-server", "cpu_us_per_request")
        node_cpu = median(scenario, "node", "cpu_us_per_request")
        if None in (ours_rps, node_rps, ours_cpu, node_cpu):
            continue
        print(f"| {scenario} | {ours_rps / node_rps:.1f}× | {node_cpu / max(ours_cpu, 1e-9):.1f}× |")
    seed = median("token-autocannon", "video-server", "rps")
    ceiling = median("plaintext-autocannon", "video-server", "rps")
    if seed and ceiling:
        print()
        print(
            f"autocannon -c 1000: video-server token route at {seed / ceiling:.1%} of the req/s the "
            f"same autocannon reaches on its plain-text route ({seed:,.0f} vs {ceiling:,.0f})"
        )
    ours = median("plaintext-wrk", "video-server", "cpu_us_per_request")
    mini = median("plaintext-wrk", "minihttp", "cpu_us_per_request")
    if ours and mini:
        print()
        print(
            f"plain text, CPU per request: video-server's HTTP layer {ours:.1f} µs vs may_minihttp "
            f"{mini:.1f} µs ({ours / mini:.2f}×, wrk -c100)"
        )
    token = median("token-wrk", "video-server", "cpu_us_per_request")
    plain = median("plaintext-wrk", "video-server", "cpu_us_per_request")
    if token and plain:
        print()
        print(
            f"video-server token CPU per request / its own plain-text route: {token / plain:.2f}× "
            f"({token:.1f} µs vs {plain:.1f} µs, wrk -c100)"
        )


def main(argv):
    if len(argv) >= 2 and argv[1] == "record" and len(argv) == 8:
        record(*argv[2:])
    elif len(argv) == 3 and argv[1] == "table":
        table(argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
