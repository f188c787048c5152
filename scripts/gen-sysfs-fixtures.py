#!/usr/bin/env python3
"""Writes the sysfs fixture trees that the numa crate's tests read.

Each tree holds only the files the numa crate reads, in the kernel's formats:
  devices/system/node/{online,possible,has_cpu,has_memory}
  devices/system/node/nodeN/{cpulist,distance,meminfo}
  devices/system/node/nodeN/hugepages/hugepages-{2048,1048576}kB/{nr,free}_hugepages
  devices/system/cpu/{online,possible}
  devices/system/cpu/cpuN/topology/{core_id,physical_package_id,thread_siblings_list}
  kernel/mm/transparent_hugepage/enabled
  kernel/mm/hugepages/hugepages-{2048,1048576}kB/{nr,free}_hugepages

Run from the repository root: scripts/gen-sysfs-fixtures.py (it rewrites numa/tests/fixtures/sysfs).
The hosts:
  laptop            1 node, 4 cores with SMT (8 CPUs, siblings n and n+4), 32 GiB, THP madvise
  two-socket-128    2 nodes, 64 cores each with SMT (256 CPUs, Linux numbering: node 0 has
                    0-63 and 128-191), 512 GiB per node, 2 MiB pages reserved, THP madvise
  eight-node-100    8 nodes, 100 cores without SMT (13,13,13,13,12,12,12,12), 128 GiB per node,
                    1 GiB pages reserved on every node, THP never
  memory-only-node  node 0: 8 cores with SMT (16 CPUs), 64 GiB; node 1: 256 GiB of CPU-less
                    (CXL) memory at distance 20; THP always
"""

import os
import shutil

ROOT = os.path.join("numa", "tests", "fixtures", "sysfs")


def cpulist(cpus):
    cpus = sorted(cpus)
    out, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


def write(base, rel, text):
    path = os.path.join(base, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")


def meminfo(node, total_kb, free_kb, huge_total, huge_free):
    rows = [
        ("MemTotal", f"{total_kb} kB"),
        ("MemFree", f"{free_kb} kB"),
        ("MemUsed", f"{total_kb - free_kb} kB"),
        ("AnonHugePages", "0 kB"),
        ("HugePages_Total", str(huge_total)),
        ("HugePages_Free", str(huge_free)),
        ("HugePages_Surp", "0"),
    ]
    return "\n".join(f"Node {node} {k + ':':<16}{v:>15}" for k, v in rows)


def host(name, nodes, distances, thp, cores):
    """nodes: list of dicts {cpus, mem_gib, free_gib, huge: {size_kb: (nr, free)}}.
    cores: list of (cpu, package, core_id, siblings)."""
    base = os.path.join(ROOT, name)
    shutil.rmtree(base, ignore_errors=True)
    ids = list(range(len(nodes)))
    write(base, "devices/system/node/online", cpulist(ids))
    write(base, "devices/system/node/possible", cpulist(ids))
    write(base, "devices/system/node/has_cpu", cpulist([i for i in ids if nodes[i]["cpus"]]))
    write(base, "devices/system/node/has_memory", cpulist(ids))
    all_cpus = []
    huge_sum = {}
    for i, node in enumerate(nodes):
        d = f"devices/system/node/node{i}"
        write(base, f"{d}/cpulist", cpulist(node["cpus"]))
        write(base, f"{d}/distance", " ".join(str(x) for x in distances[i]))
        huge = node.get("huge", {})
        nr2, free2 = huge.get(2048, (0, 0))
        write(base, f"{d}/meminfo",
              meminfo(i, node["mem_gib"] << 20, node["free_gib"] << 20, nr2, free2))
        for size in (2048, 1048576):
            nr, free = huge.get(size, (0, 0))
            write(base, f"{d}/hugepages/hugepages-{size}kB/nr_hugepages", str(nr))
            write(base, f"{d}/hugepages/hugepages-{size}kB/free_hugepages", str(free))
            s = huge_sum.setdefault(size, [0, 0])
            s[0] += nr
            s[1] += free
        all_cpus += node["cpus"]
    write(base, "devices/system/cpu/online", cpulist(all_cpus))
    write(base, "devices/system/cpu/possible", cpulist(all_cpus))
    for cpu, package, core_id, siblings in cores:
        d = f"devices/system/cpu/cpu{cpu}/topology"
        write(base, f"{d}/core_id", str(core_id))
        write(base, f"{d}/physical_package_id", str(package))
        write(base, f"{d}/thread_siblings_list", cpulist(siblings))
    modes = ["always", "madvise", "never"]
    write(base, "kernel/mm/transparent_hugepage/enabled",
          " ".join(f"[{m}]" if m == thp else m for m in modes))
    for size, (nr, free) in huge_sum.items():
        write(base, f"kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages", str(nr))
        write(base, f"kernel/mm/hugepages/hugepages-{size}kB/free_hugepages", str(free))


def smt_cores(first_cpu, count, package, sibling_offset, first_core_id=0):
    """SMT pairs (n, n + sibling_offset)."""
    out = []
    for k in range(count):
        a, b = first_cpu + k, first_cpu + k + sibling_offset
        out.append((a, package, first_core_id + k, [a, b]))
        out.append((b, package, first_core_id + k, [a, b]))
    return out


def main():
    host("laptop",
         [{"cpus": list(range(8)), "mem_gib": 32, "free_gib": 20}],
         [[10]], "madvise", smt_cores(0, 4, 0, 4))

    host("two-socket-128",
         [{"cpus": list(range(0, 64)) + list(range(128, 192)), "mem_gib": 512, "free_gib": 480,
           "huge": {2048: (65536, 65536)}},
          {"cpus": list(range(64, 128)) + list(range(192, 256)), "mem_gib": 512, "free_gib": 490,
           "huge": {2048: (65536, 65536)}}],
         [[10, 21], [21, 10]], "madvise",
         smt_cores(0, 64, 0, 128) + smt_cores(64, 64, 1, 128))

    sizes = [13, 13, 13, 13, 12, 12, 12, 12]
    nodes, cores, cpu = [], [], 0
    for i, n in enumerate(sizes):
        cpus = list(range(cpu, cpu + n))
        nodes.append({"cpus": cpus, "mem_gib": 128, "free_gib": 120,
                      "huge": {1048576: (64, 64)}})
        cores += [(c, i // 2, c - cpus[0], [c]) for c in cpus]
        cpu += n
    dist = [[10 if a == b else (16 if a // 2 == b // 2 else 32) for b in range(8)]
            for a in range(8)]
    host("eight-node-100", nodes, dist, "never", cores)

    host("memory-only-node",
         [{"cpus": list(range(16)), "mem_gib": 64, "free_gib": 60},
          {"cpus": [], "mem_gib": 256, "free_gib": 256}],
         [[10, 20], [20, 10]], "always", smt_cores(0, 8, 0, 8))


if __name__ == "__main__":
    main()
