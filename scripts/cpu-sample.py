#!/usr/bin/env python3
"""Samples the CPU time of the benchmark's processes once a second, as percent of one core.

Usage: scripts/cpu-sample.py OUT & scripts/bench.sh; kill %1

Each line of OUT is a Unix time and, per process name (SecantusDB, sms-api, sms-dispatcher,
sms-bench, RabbitMQ's beam.smp), the percent of one core its processes used since the line
before (utime + stime from /proc/<pid>/stat; 200 is both cores of a 2-core machine).
"""
import os
import sys
import time

NAMES = ["secantusd", "sms-api", "sms-dispatcher", "sms-bench", "beam.smp"]
HZ = os.sysconf("SC_CLK_TCK")


def seconds_by_name():
    total = dict.fromkeys(NAMES, 0.0)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        for name in NAMES:
            if comm.startswith(name[:15]):  # the kernel keeps 15 characters of the name
                total[name] += (int(fields[11]) + int(fields[12])) / HZ
    return total


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], "w") as out:
        before, at = seconds_by_name(), time.time()
        while True:
            time.sleep(1)
            now, t = seconds_by_name(), time.time()
            # A process that ended makes its name's total drop: count it as 0, not negative.
            shares = (max(now[n] - before[n], 0) / (t - at) * 100 for n in NAMES)
            out.write(f"{t:.1f} " + " ".join(f"{n}={s:.0f}" for n, s in zip(NAMES, shares)) + "\n")
            out.flush()
            before, at = now, t


if __name__ == "__main__":
    main()
