#!/usr/bin/env python3
"""The bookkeeping of bench/run.sh: raw tool outputs in, records, tables and plots out.

    report.py body N                       a token request body with N sources
    report.py record --scenario … --raw F  one JSON record from one tool run
    report.py views --round R --metrics F  the view counters after a GET run
    report.py report --records F --out D   performance.md, plot data and gnuplot scripts
    report.py readme --section F --readme README.md   replace the README's section

Records are JSON lines; every figure in performance.md is a median over the rounds of
the run. Standard library only.
"""

import argparse
import datetime
import json
import re
import statistics
import sys

# ---- inputs -------------------------------------------------------------------------


def token_body(sources):
    """The contract's body, with `sources` sources (sizes and names vary)."""
    return json.dumps({
        "video": {
            "_id": "6213a7299fa2604f1b188ee0",
            "videoId": "12345",
            "title": "Big Buck Bunny",
            "sources": [
                {"src": f"/Big_Buck_Bunny_{index}_surround_FrostWire.com.mp4",
                 "size": 240 + index, "type": "video/mp4"}
                for index in range(sources)
            ],
        }
    }, separators=(",", ":"))


def parse_wrk(text):
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line[len("WRK_JSON "):])
            return {
                "requests": data["requests"],
                "seconds": data["duration_us"] / 1e6,
                "p50_ms": data["p50_us"] / 1000,
                "p99_ms": data["p99_us"] / 1000,
                "errors": sum(data[key] for key in data if key.startswith("errors_")),
            }
    raise SystemExit("no WRK_JSON line in wrk output:\n" + text)


def parse_autocannon(data):
    return {
        "requests": data["requests"]["total"],
        "seconds": data["duration"],
        "p50_ms": data["latency"]["p50"],
        "p99_ms": data["latency"]["p99"],
        "errors": data.get("errors", 0) + data.get("timeouts", 0) + data.get("non2xx", 0),
    }


def parse_openloop(data):
    bad_status = sum(count for status, count in data["statuses"].items() if status != "200")
    latency = data["latency_ms"]
    return {
        "requests": data["completed"],
        "seconds": data["duration_s"],
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "p999_ms": latency["p99.9"],
        "max_ms": latency["max"],
        "target_rate": data["target_rate"],
        "curve": data["latency_curve_ms"],
        "send_lag_p99_ms": data["send_lag_ms"]["p99"],
        "errors": data["errors"] + data["unanswered"] + bad_status,
    }


def record(args):
    with open(args.raw, encoding="utf-8") as raw:
        text = raw.read()
    if args.scenario.endswith("-wrk"):
        result = parse_wrk(text)
    elif args.scenario.endswith("-autocannon"):
        result = parse_autocannon(json.loads(text))
    elif args.scenario.endswith("-openloop"):
        result = parse_openloop(json.loads(text))
    else:
        raise SystemExit(f"unknown scenario {args.scenario}")
    if args.requests is not None:
        # Only a steady window was measured: its own request count and length.
        result.update(requests=args.requests, seconds=args.seconds)
    cpu_seconds = args.cpu_ticks / args.clock_ticks
    steal_seconds = args.steal_ticks / args.clock_ticks
    result.update(
        kind="load",
        scenario=args.scenario,
        server=args.server,
        round=args.round,
        # A count or rate, or a name (the signing scheme of scheme-wrk).
        param=(int(args.param) if args.param.isdigit() else args.param) or None,
        # Requests per write: 1 without pipelining.
        depth=args.depth,
        rps=result["requests"] / result["seconds"],
        cpu_us_per_request=cpu_seconds * 1e6 / max(result["requests"], 1),
        cpu_seconds=cpu_seconds,
        writer_cpu_us_per_request=args.writer_ticks / args.clock_ticks * 1e6
        / max(result["requests"], 1),
        steal_pct=100 * steal_seconds / (args.wall_seconds * args.cpus),
    )
    print(json.dumps(result))


def views(args):
    counters = {}
    with open(args.metrics, encoding="utf-8") as metrics:
        for line in metrics:
            match = re.match(r"^views_(\w+?)(?:_total)? (\d+)$", line.strip())
            if match:
                counters[match.group(1)] = int(match.group(2))
    print(json.dumps({"kind": "views", "round": args.round, **counters}))


# ---- the report ---------------------------------------------------------------------

# Every server measured, in table order, and how the tables name them.
SERVERS = ("video-server", "minihttp", "nginx", "node")
SERVER_NAMES = {"video-server": "video-server", "minihttp": "may_minihttp", "nginx": "nginx",
                "node": "Node"}
# The rows of the anchor tables, (route, server): the two anchors' hello world, then ours.
ANCHOR_ROWS = (("plaintext", "nginx"), ("plaintext", "minihttp"),
               ("plaintext", "video-server"), ("video", "video-server"),
               ("token", "video-server"))
ROUTE_NAMES = {"plaintext": "hello / `GET /plaintext`", "video": "`GET /video/12345`",
               "token": "`POST /video/token`"}


class Records:
    def __init__(self, path):
        with open(path, encoding="utf-8") as lines:
            self.all = [json.loads(line) for line in lines if line.strip()]

    def load(self, scenario, server, param=None, depth=1):
        return [r for r in self.all if r.get("kind") == "load" and r["scenario"] == scenario
                and r["server"] == server and (param is None or r["param"] == param)
                and r.get("depth", 1) == depth]

    def median(self, key, scenario, server, param=None, depth=1):
        entries = self.load(scenario, server, param, depth)
        return statistics.median(r[key] for r in entries) if entries else None

    def params(self, scenario, server="video-server", depth=1):
        return sorted({r["param"] for r in self.load(scenario, server, depth=depth)})

    def depths(self, scenario, server):
        """The pipelining depths measured, 1 (none) first."""
        return sorted({r.get("depth", 1) for r in self.all if r.get("kind") == "load"
                       and r["scenario"] == scenario and r["server"] == server})

    def of_kind(self, kind):
        return [r for r in self.all if r.get("kind") == kind]


def fmt(value, digits=1, suffix=""):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def verdict(met):
    return "met" if met else "**missed**"


def fit_line(points):
    """Least squares y = a + b x; returns a, b, r²."""
    xs, ys = zip(*points)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return intercept, slope, 1 - residual / total if total else 1.0


def report(args):
    rec = Records(args.records)
    m = rec.median
    rate = max(rec.params("plaintext-openloop") or [0])
    node_rate = min(rec.params("token-openloop", "node") or [0])
    rounds = len({r["round"] for r in rec.of_kind("load")})
    lines = []
    say = lines.append

    token = m("cpu_us_per_request", "token-wrk", "video-server")
    plain = m("cpu_us_per_request", "plaintext-wrk", "video-server")
    mini = m("cpu_us_per_request", "plaintext-wrk", "minihttp")
    node_token = m("cpu_us_per_request", "token-wrk", "node")
    video = m("cpu_us_per_request", "video-wrk", "video-server")
    video_writer = m("writer_cpu_us_per_request", "video-wrk", "video-server")
    seed = m("rps", "token-autocannon", "video-server")
    seed_plain = m("rps", "plaintext-autocannon", "video-server")
    seed_errors = sum(r["errors"] for r in rec.load("token-autocannon", "video-server"))
    fixed = m("p99_ms", "token-openloop", "video-server", rate)
    fixed_plain = m("p99_ms", "plaintext-openloop", "video-server", rate)
    fixed_mini = m("p99_ms", "plaintext-openloop", "minihttp", rate)
    view_rounds = rec.of_kind("views")
    views_ok = bool(view_rounds) and all(
        v.get("dropped", 1) == 0 and v.get("accepted") == v.get("persisted") for v in view_rounds)
    idle = next((r for r in rec.of_kind("idle") if r.get("server", "video-server")
                 == "video-server" and r["connections"] == 10_000 and not r.get("skipped")), None)
    sources = [(n, m("cpu_us_per_request", "sources-wrk", "video-server", n))
               for n in rec.params("sources-wrk")]
    conns = [(n, m("cpu_us_per_request", "token-conns-wrk", "video-server", n))
             for n in rec.params("token-conns-wrk")]

    say(f"Generated by `bench/run.sh` (started {args.date}), {args.machine}; {args.settings}. "
        f"Servers pinned to one CPU, load generators to the other (`taskset`); every figure "
        f"is the median of {rounds} rounds. Raw outputs: `{args.run_dir}/` (not committed; "
        f"rerun to reproduce).")
    say("")
    if not rec.load("token-wrk", "video-server"):
        # A --schemes-only run: nothing else was measured.
        scheme_lines(rec, say)
        with open(f"{args.out}/performance.md", "w", encoding="utf-8") as section:
            section.write("\n".join(lines) + "\n")
        return
    say("#### Targets")
    say("")
    say("| target | goal | measured | |")
    say("| --- | --- | --- | --- |")
    if token is not None:
        say(f"| `POST /video/token` server CPU per request (wrk -c100) | ≤ 8 µs | {fmt(token)} µs "
            f"| {verdict(token <= 8)} |")
    if token and plain:
        say(f"| token CPU / same binary's plain-text CPU | ≤ 1.3× | {token / plain:.2f}× "
            f"({fmt(token)} / {fmt(plain)} µs) | {verdict(token / plain <= 1.3)} |")
    if token and node_token:
        say(f"| Node baseline CPU / ours, token route | ≥ 25× | {node_token / token:.1f}× "
            f"({fmt(node_token)} / {fmt(token)} µs) | {verdict(node_token / token >= 25)} |")
    if video is not None:
        say(f"| `GET /video/:id` CPU per request, batch writer included | ≤ 6 µs | "
            f"{fmt(video)} µs (batch writer: {fmt(video_writer)} µs of it) "
            f"| {verdict(video <= 6)} |")
        accepted = sum(v.get("accepted", 0) for v in view_rounds)
        dropped = sum(v.get("dropped", 0) for v in view_rounds)
        say(f"| views persisted at the request rate | none dropped | {accepted:,} accepted, "
            f"{sum(v.get('persisted', 0) for v in view_rounds):,} persisted, {dropped:,} dropped "
            f"| {verdict(views_ok)} |")
    if seed and seed_plain:
        say(f"| seed autocannon (-c 1000 -p 1): token req/s vs plain-text req/s | ≥ 95 %, "
            f"no errors | {seed / seed_plain:.1%} ({fmt(seed, 0)} vs {fmt(seed_plain, 0)}), "
            f"{seed_errors} errors | {verdict(seed / seed_plain >= 0.95 and seed_errors == 0)} |")
    if fixed is not None:
        fixed_rounds = sorted(rec.load("token-openloop", "video-server", rate),
                              key=lambda r: r["round"])
        rounds_text = ", ".join(
            f"{r['p99_ms']:.2f} / {r['p999_ms']:.2f} ms at {r['steal_pct']:.1f} % steal"
            for r in fixed_rounds)
        # The machine's hypervisor, not the server, sets the tail of a round with steal.
        quiet = [r for r in fixed_rounds if r["steal_pct"] < 1] or fixed_rounds
        p99 = statistics.median(r["p99_ms"] for r in quiet)
        p999 = statistics.median(r["p999_ms"] for r in quiet)
        say(f"| token at a fixed {rate:,} req/s (openloop, 100 connections), rounds under 1 % "
            f"steal | p99 ≤ 2 ms, p99.9 ≤ 5 ms | p99 {fmt(p99, 2)} ms, p99.9 {fmt(p999, 2)} ms "
            f"over {len(quiet)} of {len(fixed_rounds)} rounds (every round, p99 / p99.9: "
            f"{rounds_text}); plain text at the same rate (median p99): this binary "
            f"{fmt(fixed_plain, 2)} ms, may_minihttp {fmt(fixed_mini, 2)} ms "
            f"| {verdict(p99 <= 2 and p999 <= 5)} |")
    if idle:
        say(f"| resident memory per idle keep-alive connection, {idle['connections']:,} open | "
            f"≤ 2 KiB | {idle['kib_per_connection']:.1f} KiB ({idle['rss_after_mib']:.0f} MiB "
            f"in all, {idle['answered']:,} answered) | {verdict(idle['kib_per_connection'] <= 2)} |")
    if len(sources) >= 3 and all(cpu for _, cpu in sources):
        intercept, slope, r2 = fit_line(sources)
        say(f"| CPU per request vs sources {sources[0][0]}→{sources[-1][0]} | linear, small "
            f"constant | {fmt(sources[0][1])} → {fmt(sources[-1][1])} µs; fit "
            f"{intercept:.1f} µs + {slope:.2f} µs/source, r² {r2:.3f} | {verdict(r2 >= 0.98)} |")
    if len(conns) >= 2 and all(cpu for _, cpu in conns):
        fewest, most = conns[0][0], conns[-1][0]
        ours = conns[-1][1] / conns[0][1]
        nginx_low = m("cpu_us_per_request", "plaintext-conns-wrk", "nginx", fewest)
        nginx_high = m("cpu_us_per_request", "plaintext-conns-wrk", "nginx", most)
        nginx = nginx_high / nginx_low if nginx_low and nginx_high else None
        nginx_text = f"; nginx's hello: {nginx:.2f}×" if nginx else ""
        say(f"| token CPU per request, {most:,} ÷ {fewest:,} connections (wrk) | ≤ 1.2×, and "
            f"not above nginx's own ratio | {ours:.2f}× ("
            + ", ".join(f"{n:,}: {fmt(c)}" for n, c in conns)
            + f" µs){nginx_text} | {verdict(ours <= 1.2 and (nginx is None or ours <= nginx))} |")
    limit_lines(rec, say)
    say("")

    scheme_lines(rec, say)

    say("#### Side by side (closed loop)")
    say("")
    say("| scenario | server | req/s | p50 ms | p99 ms | errors | server CPU µs/req | steal % |")
    say("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scenario in ("token-autocannon", "plaintext-autocannon", "token-wrk", "video-wrk",
                     "plaintext-wrk", "token-p10-autocannon", "video-p10-autocannon",
                     "plaintext-p10-autocannon"):
        for server in SERVERS:
            entries = rec.load(scenario, server)
            if not entries:
                continue
            say(f"| {scenario} | {server} | {fmt(m('rps', scenario, server), 0)} "
                f"| {fmt(m('p50_ms', scenario, server), 2)} | {fmt(m('p99_ms', scenario, server), 2)} "
                f"| {sum(r['errors'] for r in entries)} "
                f"| {fmt(m('cpu_us_per_request', scenario, server))} "
                f"| {fmt(m('steal_pct', scenario, server))} |")
    say("")
    say("| scenario | req/s, video-server / Node | CPU per request, Node / video-server |")
    say("| --- | ---: | ---: |")
    for scenario in ("token-autocannon", "token-wrk", "video-wrk"):
        ours_rps, node_rps = m("rps", scenario, "video-server"), m("rps", scenario, "node")
        ours_cpu = m("cpu_us_per_request", scenario, "video-server")
        node_cpu = m("cpu_us_per_request", scenario, "node")
        if not all((ours_rps, node_rps, ours_cpu, node_cpu)):
            continue  # not measured, or nothing answered (Node can starve under -c 1000)
        say(f"| {scenario} | {ours_rps / node_rps:.1f}× | {node_cpu / ours_cpu:.1f}× |")
    say("")
    nginx = m("cpu_us_per_request", "plaintext-wrk", "nginx")
    if plain and mini:
        say(f"Plain text, CPU per request: video-server's HTTP layer {fmt(plain)} µs, "
            f"may_minihttp {fmt(mini)} µs ({plain / mini:.2f}×)"
            + (f", nginx {fmt(nginx)} µs ({plain / nginx:.2f}×)." if nginx else "."))
        say("")

    anchor_lines(rec, say)

    say(f"#### Latency at a fixed rate (openloop, 100 connections, from the scheduled send time)")
    say("")
    say("| route | server | target req/s | achieved | p50 ms | p99 ms | p99.9 ms | max ms "
        "| generator lag p99 ms | steal % | errors |")
    say("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scenario in ("token-openloop", "video-openloop", "plaintext-openloop"):
        for server in SERVERS:
            for param in rec.params(scenario, server):
                entries = rec.load(scenario, server, param)
                say(f"| {scenario.split('-')[0]} | {server} | {param:,} "
                    f"| {fmt(m('rps', scenario, server, param), 0)} | "
                    + " | ".join(fmt(m(key, scenario, server, param), 2) for key in
                                 ("p50_ms", "p99_ms", "p999_ms", "max_ms", "send_lag_p99_ms"))
                    + f" | {fmt(m('steal_pct', scenario, server, param))} "
                    f"| {sum(r['errors'] for r in entries)} |")
    say("")
    say("![Latency percentiles](bench/plots/latency-percentiles.svg)")
    say("")

    say("#### How cost grows")
    say("")
    say("| sources per video | " + " | ".join(str(n) for n, _ in sources) + " |")
    say("| --- |" + " ---: |" * len(sources))
    say("| server CPU µs/req | " + " | ".join(fmt(c) for _, c in sources) + " |")
    say("")
    say("CPU per response against connections, for every server and route: the first table of "
        "[Anchors](#anchors-nginx-and-may_minihttp-beside-our-routes), and the plot.")
    say("")
    say("![CPU per request vs sources](bench/plots/cpu-vs-sources.svg) "
        "![CPU per request vs connections](bench/plots/cpu-vs-connections.svg)")
    say("")

    idle_lines(rec, say)
    instruction_lines(rec, say)

    with open(f"{args.out}/performance.md", "w", encoding="utf-8") as section:
        section.write("\n".join(lines) + "\n")
    write_plots(rec, args.out, rate, node_rate, sources)


def limit_lines(rec, say):
    """The anchored targets: each route's CPU per response over an anchor's hello world,
    both measured in this run at the fewest connections, with and without pipelining."""
    def cpu(route, server, connections, depth):
        return rec.median("cpu_us_per_request", f"{route}-conns-wrk", server, connections, depth)

    depths = [d for d in rec.depths("plaintext-conns-wrk", "minihttp") if d > 1]
    targets = []
    if depths:
        depth = depths[0]
        connections = min(rec.params("plaintext-conns-wrk", "minihttp", depth) or [0])
        for route, goal, note in (("plaintext", 1.0, ""),
                                  ("video", 2.0, "; every thread counted, the batch writer's inserts too"),
                                  ("token", 3.0, "")):
            targets.append((route, "minihttp", connections, depth, goal, note))
    connections = min(rec.params("plaintext-conns-wrk", "nginx") or [0])
    for route in ("plaintext", "video", "token"):
        targets.append((route, "nginx", connections, 1, 1.0, ""))
    for route, anchor, connections, depth, goal, note in targets:
        ours, theirs = cpu(route, "video-server", connections, depth), \
            cpu("plaintext", anchor, connections, depth)
        if not ours or not theirs:
            continue
        setting = f"{connections:,} connections" + (f", {depth} per write" if depth > 1 else "")
        say(f"| {ROUTE_NAMES[route]} CPU per response ÷ {SERVER_NAMES[anchor]}'s hello ({setting}"
            f"{note}) | ≤ {goal:.1f}× | {ours / theirs:.2f}× ({fmt(ours, 2)} / {fmt(theirs, 2)} µs) "
            f"| {verdict(ours / theirs <= goal)} |")


def anchor_lines(rec, say):
    """Every route of every server under the same wrk settings (connections, pipelining) and
    autocannon -p 10, and each of our routes divided by the anchors' hello world."""
    conns_wrk = [r for r in rec.of_kind("load") if r["scenario"].endswith("-conns-wrk")]
    if not conns_wrk:
        return
    # (connections, depth), unpipelined first.
    settings = sorted({(r["param"], r.get("depth", 1)) for r in conns_wrk},
                      key=lambda setting: (setting[1], setting[0]))
    measured = {(r["scenario"][:-len("-conns-wrk")], r["server"]) for r in conns_wrk}
    rows = [row for row in ANCHOR_ROWS if row in measured]

    def cpu(route, server, setting):
        return rec.median("cpu_us_per_request", f"{route}-conns-wrk", server, *setting)

    def label(setting):
        connections, depth = setting
        return f"{connections:,}" + (f" ×{depth}" if depth > 1 else "")

    # CPU at the most connections ÷ at the fewest, per depth.
    spans = []
    for depth in sorted({depth for _, depth in settings}):
        counts = [connections for connections, d in settings if d == depth]
        if len(counts) >= 2:
            spans.append(((min(counts), depth), (max(counts), depth)))
    p10 = "autocannon -c100 -p10"
    has_p10 = any(rec.load(f"{route}-p10-autocannon", server) for route, server in rows)

    say("#### Anchors: nginx and may_minihttp beside our routes")
    say("")
    say("Server CPU per response (µs) with wrk -t1 at each connection count, over a steady "
        "window after the connections are open, divided by the responses the server itself "
        "counted (video-server's `/metrics`, nginx's `stub_status`, may_minihttp's counter); "
        "×16: 16 requests per write (`bench/wrk/pipeline.lua`). nginx is Debian's, one worker "
        "(`bench/nginx-hello.sh`), measured by its worker process. The last column(s): CPU per "
        "response at the most connections ÷ at the fewest.")
    say("")
    header = [label(s) for s in settings] + ([p10] if has_p10 else []) + [
        f"{label(high)} ÷ {label(low)}" for low, high in spans]
    say("| route | server | " + " | ".join(header) + " |")
    say("| --- | --- |" + " ---: |" * len(header))
    for route, server in rows:
        cells = [fmt(cpu(route, server, s)) for s in settings]
        if has_p10:
            cells.append(fmt(rec.median("cpu_us_per_request", f"{route}-p10-autocannon", server)))
        for low, high in spans:
            low_cpu, high_cpu = cpu(route, server, low), cpu(route, server, high)
            cells.append(fmt(high_cpu / low_cpu, 2, "×") if low_cpu and high_cpu else "—")
        say(f"| {ROUTE_NAMES[route]} | {SERVER_NAMES[server]} | " + " | ".join(cells) + " |")
    say("")
    say("Responses per second in the same runs:")
    say("")
    header = [label(s) for s in settings] + ([p10] if has_p10 else [])
    say("| route | server | " + " | ".join(header) + " |")
    say("| --- | --- |" + " ---: |" * len(header))
    for route, server in rows:
        cells = [fmt(rec.median("rps", f"{route}-conns-wrk", server, *s), 0) for s in settings]
        if has_p10:
            cells.append(fmt(rec.median("rps", f"{route}-p10-autocannon", server), 0))
        say(f"| {ROUTE_NAMES[route]} | {SERVER_NAMES[server]} | " + " | ".join(cells) + " |")
    say("")
    say("Each route's CPU per response divided by an anchor's hello world at the same "
        "connections and depth:")
    say("")
    say("| route | server | ÷ | " + " | ".join(header) + " |")
    say("| --- | --- | --- |" + " ---: |" * len(header))
    for route, server in rows:
        for anchor in ("minihttp", "nginx"):
            if server == anchor or (server, anchor) == ("nginx", "minihttp") or \
                    ("plaintext", anchor) not in measured:
                continue
            cells = []
            for setting in settings:
                ours, theirs = cpu(route, server, setting), cpu("plaintext", anchor, setting)
                cells.append(fmt(ours / theirs, 2, "×") if ours and theirs else "—")
            if has_p10:
                ours = rec.median("cpu_us_per_request", f"{route}-p10-autocannon", server)
                theirs = rec.median("cpu_us_per_request", "plaintext-p10-autocannon", anchor)
                cells.append(fmt(ours / theirs, 2, "×") if ours and theirs else "—")
            say(f"| {ROUTE_NAMES[route]} | {SERVER_NAMES[server]} | {SERVER_NAMES[anchor]} hello "
                "| " + " | ".join(cells) + " |")
    say("")


def idle_lines(rec, say):
    """Resident memory per idle keep-alive connection, per server and connection count."""
    idle = rec.of_kind("idle")
    if not idle:
        return
    settle = max(r.get("settle_s", 0) for r in idle)
    say("#### Idle keep-alive connections")
    say("")
    say(f"Each connection sends one `GET` and reads its answer, then stays open and quiet; "
        f"the server's resident memory (VmRSS; nginx: its worker's) is read before the "
        f"connections open and {settle:g} s after the last answer (`bench/idle_connections.py`).")
    say("")
    say("| server | connections | answered | still open | resident before | resident after "
        "| per connection |")
    say("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    order = {server: index for index, server in enumerate(SERVERS)}
    for r in sorted(idle, key=lambda r: (order.get(r.get("server", "video-server"), 9),
                                         r["connections"])):
        name = SERVER_NAMES.get(r.get("server", "video-server"), r.get("server"))
        if r.get("skipped"):
            say(f"| {name} | {r['connections']:,} | not measured: {r['skipped']} | | | | |")
            continue
        say(f"| {name} | {r['connections']:,} | {r['answered']:,} | {r['still_open']:,} | "
            f"{r['rss_before_mib']:.0f} MiB | {r['rss_after_mib']:.0f} MiB | "
            f"{r['kib_per_connection']:.1f} KiB |")
    say("")


INSTRUCTION_ROUTES = {
    "plaintext": "`GET /plaintext`",
    "plaintext-pipelined": "`GET /plaintext`, 16 per write",
    "video": "`GET /video/12345` (HTTP side, view handed to the bus)",
    "video-pipelined": "`GET /video/12345`, 16 per write (HTTP side)",
    "not-found": "`GET /video/<unknown>` (404)",
    "token": "`POST /video/token` (two sources)",
    "token-pipelined": "`POST /video/token`, 16 per write",
    "view-writer": "batch writer, per view (SQLite, batches of 1,000)",
}


def instruction_lines(rec, say):
    """Instructions per request under callgrind, beside the counts recorded in the
    repository (bench/instructions.expected)."""
    counts = rec.of_kind("instructions")
    if not counts:
        return
    say("#### Instructions per request (callgrind)")
    say("")
    say("Counted by `bench/instructions.sh` under valgrind's callgrind, one worker, inside the "
        "connection's coroutine (and the batch writer's flush for the writer's row): a count, "
        "not a time, so it does not move with the machine's noise. `.ci/run` fails when a "
        "route grows more than 5 % over the count recorded in `bench/instructions.expected`.")
    say("")
    say("| route | instructions per request | recorded | change |")
    say("| --- | ---: | ---: | ---: |")
    for r in counts:
        change = (r["per_request"] - r["recorded"]) / r["recorded"] * 100
        say(f"| {INSTRUCTION_ROUTES.get(r['route'], r['route'])} | {r['per_request']:,} | "
            f"{r['recorded']:,} | {change:+.1f} % |")
    say("")
    anchors = rec.of_kind("instructions-anchor")
    if anchors:
        say("The same count for may_minihttp's hello world beside our `/plaintext`, both "
            "taken as every instruction run inside coroutines (may's `run_coroutine`, which "
            "includes the switches into and out of the connection), so that the two servers "
            "are counted alike:")
        say("")
        say("| route | video-server | may_minihttp | ratio |")
        say("| --- | ---: | ---: | ---: |")
        for r in anchors:
            say(f"| {INSTRUCTION_ROUTES.get(r['route'], r['route'])} | {r['video_server']:,} | "
                f"{r['minihttp']:,} | {r['video_server'] / r['minihttp']:.2f}× |")
        say("")


def scheme_lines(rec, say):
    """Token CPU per request by signing scheme, each round's figure divided by the same
    round's md5 figure (the servers ran one after the other, under the same load)."""
    schemes = [r["param"] for r in rec.load("scheme-wrk", "video-server") if r["round"] == 1]
    if not schemes:
        return
    say("#### Token route by signing scheme (wrk -t1 -c100, contract body, one CDN)")
    say("")
    say("| scheme | req/s | server CPU µs/req | × md5 (same round) | errors |")
    say("| --- | ---: | ---: | ---: | ---: |")
    md5 = {r["round"]: r["cpu_us_per_request"] for r in rec.load("scheme-wrk", "video-server", "md5")}
    for scheme in schemes:
        entries = rec.load("scheme-wrk", "video-server", scheme)
        ratios = [r["cpu_us_per_request"] / md5[r["round"]] for r in entries if r["round"] in md5]
        say(f"| {scheme} | {fmt(rec.median('rps', 'scheme-wrk', 'video-server', scheme), 0)} "
            f"| {fmt(rec.median('cpu_us_per_request', 'scheme-wrk', 'video-server', scheme))} "
            f"| {fmt(statistics.median(ratios) if ratios else None, 2, '×')} "
            f"| {sum(r['errors'] for r in entries)} |")
    say("")


def median_round(entries, key):
    """The entry whose `key` is the median (the lower middle for an even count)."""
    ordered = sorted(entries, key=lambda r: r[key])
    return ordered[(len(ordered) - 1) // 2]


def write_plots(rec, out, rate, node_rate, sources):
    series = [
        ("token-openloop", "video-server", rate, f"video-server token, {rate:,} req/s"),
        ("plaintext-openloop", "video-server", rate, f"video-server plain text, {rate:,} req/s"),
        ("plaintext-openloop", "minihttp", rate, f"may_minihttp plain text, {rate:,} req/s"),
        ("plaintext-openloop", "nginx", rate, f"nginx plain text, {rate:,} req/s"),
        ("token-openloop", "video-server", node_rate, f"video-server token, {node_rate:,} req/s"),
        ("token-openloop", "node", node_rate, f"Node baseline token, {node_rate:,} req/s"),
    ]
    plots = []
    for index, (scenario, server, param, title) in enumerate(series):
        entries = rec.load(scenario, server, param)
        if not entries:
            continue
        curve = median_round(entries, "p99_ms")["curve"]
        with open(f"{out}/latency-{index}.dat", "w", encoding="utf-8") as data:
            for percentile, value in curve:
                if percentile < 100:
                    data.write(f"{1 / (1 - percentile / 100):.6g} {max(value, 0.001)}\n")
        plots.append(f"'latency-{index}.dat' using 1:2 with linespoints title '{title}'")
    common = ("set terminal svg size 640,400 dynamic noenhanced font 'sans,11'\n"
              "set grid\nset key top left\n")
    if plots:
        with open(f"{out}/latency.gp", "w", encoding="utf-8") as script:
            script.write(common + "set output 'latency-percentiles.svg'\n"
                         "set title 'Latency by percentile, from the scheduled send time (median round)'\n"
                         "set key bottom right opaque\n"
                         "set logscale xy\nset xlabel 'percentile'\nset ylabel 'latency (ms)'\n"
                         "set xtics ('p50' 2, 'p90' 10, 'p99' 100, 'p99.9' 1000, 'p99.99' 10000)\n"
                         "plot " + ", \\\n     ".join(plots) + "\n")
    # Server CPU per request: one line per (server, route) measured.
    by_connections = []
    for route, server in ANCHOR_ROWS:
        points = [(n, rec.median("cpu_us_per_request", f"{route}-conns-wrk", server, n))
                  for n in rec.params(f"{route}-conns-wrk", server)]
        if points:
            by_connections.append((f"{SERVER_NAMES[server]} {route}", points))
    for name, lines, label, logx in (
            ("cpu-vs-sources", [("video-server", sources)] if sources else [],
             "sources per video (POST /video/token)", False),
            ("cpu-vs-connections", by_connections, "connections (wrk -t1, no pipelining)", True)):
        if not lines:
            continue
        plotted = []
        for index, (title, points) in enumerate(lines):
            with open(f"{out}/{name}-{index}.dat", "w", encoding="utf-8") as data:
                for x, y in points:
                    data.write(f"{x} {y}\n")
            plotted.append(f"'{name}-{index}.dat' using 1:2 with linespoints title '{title}'")
        with open(f"{out}/{name}.gp", "w", encoding="utf-8") as script:
            script.write(common + f"set output '{name}.svg'\n"
                         f"set title 'Server CPU per request (median of rounds)'\n"
                         f"set xlabel '{label}'\nset ylabel 'CPU µs per request'\n"
                         + ("set logscale x\n" if logx else "")
                         + "set yrange [0:*]\n"
                         + "plot " + ", \\\n     ".join(plotted) + "\n")


def readme(args):
    with open(args.section, encoding="utf-8") as section:
        body = section.read()
    with open(args.readme, encoding="utf-8") as readme_file:
        text = readme_file.read()
    begin, end = "<!-- performance:begin -->", "<!-- performance:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{args.readme} has no {begin} … {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(args.readme, "w", encoding="utf-8") as readme_file:
        readme_file.write(head + begin + "\n" + body + end + tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    body = commands.add_parser("body")
    body.add_argument("sources", type=int)
    rec = commands.add_parser("record")
    for name in ("scenario", "server", "raw", "param"):
        rec.add_argument(f"--{name}", required=name != "param", default="")
    for name in ("round", "cpu-ticks", "writer-ticks", "steal-ticks", "clock-ticks", "cpus"):
        rec.add_argument(f"--{name}", type=int, required=True)
    rec.add_argument("--depth", type=int, default=1)
    rec.add_argument("--wall-seconds", type=float, required=True)
    rec.add_argument("--requests", type=int)
    rec.add_argument("--seconds", type=float)
    view = commands.add_parser("views")
    view.add_argument("--round", type=int, required=True)
    view.add_argument("--metrics", required=True)
    rep = commands.add_parser("report")
    for name in ("records", "out", "machine", "settings", "run-dir"):
        rep.add_argument(f"--{name}", required=True)
    rep.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc)
                     .strftime("%Y-%m-%d %H:%M UTC"))
    readme_cmd = commands.add_parser("readme")
    readme_cmd.add_argument("--section", required=True)
    readme_cmd.add_argument("--readme", required=True)
    args = parser.parse_args()
    if args.command == "body":
        print(token_body(args.sources))
    elif args.command == "record":
        record(args)
    elif args.command == "views":
        views(args)
    elif args.command == "report":
        report(args)
    else:
        readme(args)


if __name__ == "__main__":
    main()
