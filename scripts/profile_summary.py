#!/usr/bin/env python3
"""Groups a folded perf profile (inferno-collapse-perf output) into the costs we act on.

    scripts/profile_summary.py stacks.folded

A sample whose stack enters the kernel is charged to the system call it came through
(send, receive, …); a user-space sample to the component of its innermost frame. Prints
each group's share of all samples, largest first. Standard library only.
"""

import collections
import sys

KERNEL_ENTRY = ("entry_SYSCALL_64", "do_syscall_64", "asm_")

# Innermost-frame fragments → component, first match wins.
USER_GROUPS = [
    ("hashing (MD5, SHA-256)", ("md5::", "sha2::", "md5_", "sha256")),
    ("JSON parsing (serde_json, payload visitors)", ("serde_json::", "serde_core::", "video::parse::", "from_utf8")),
    ("JSON rendering", ("write_json", "write_escaped", "write_decoded", "json::write", "write_signed_url", "write_hex")),
    ("HTTP parsing and responses", ("httparse::", "http::request", "http::response", "http::connection", "http::date")),
    ("may runtime (coroutine switches, io wait)", ("may::", "generator::", "swap_registers", "may_")),
    ("metrics and clocks", ("metrics::", "prometheus::", "clock_gettime")),
    ("allocator and memcpy", ("mi_", "mimalloc", "memmove", "memcpy", "memset")),
    ("view bus and batch writer", ("views::", "crossbeam", "sqlite", "store::")),
]


def kernel_group(frames):
    text = ";".join(frames)
    if "sendto" in text or "tcp_sendmsg" in text or "__send" in text:
        return "kernel: send (incl. loopback delivery to the client)"
    if "recvfrom" in text or "tcp_recvmsg" in text or "sys_read" in text or "ksys_read" in text:
        return "kernel: receive"
    if "epoll" in text:
        return "kernel: epoll"
    if "futex" in text:
        return "kernel: futex (thread wake-ups)"
    return "kernel: other"


def group(frames):
    if any(frame.startswith(KERNEL_ENTRY) for frame in frames):
        return kernel_group(frames)
    leaf = frames[-1]
    for name, fragments in USER_GROUPS:
        if any(fragment in leaf for fragment in fragments):
            return name
    return "user: other"


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    totals = collections.Counter()
    samples = 0
    with open(sys.argv[1], encoding="utf-8", errors="replace") as folded:
        for line in folded:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            totals[group(stack.split(";"))] += int(count)
            samples += int(count)
    if not samples:
        raise SystemExit("no samples")
    print("share of the sampled CPU time")
    for name, count in totals.most_common():
        print(f"{100 * count / samples:5.1f} %  {name}")


if __name__ == "__main__":
    main()
