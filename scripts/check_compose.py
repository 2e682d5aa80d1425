#!/usr/bin/env python3
"""Checks docker-compose.yaml against the real binaries (Docker itself cannot run here).

1. `docker-compose config -q` accepts the file.
2. Every service built from the Dockerfile runs a command whose flags its binary accepts:
   the command is run with `--help` appended (clap rejects an unknown flag before printing help).
3. Every variable of the env file the services load is read by some binary (`[env: NAME=` in
   its help) or by a library (AWS SDK, tracing).

Usage: check_compose.py BIN_DIR   (prints one line per check, exits 1 on the first mismatch)
"""
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY_VARS = {"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED", "RUST_LOG"}


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


def main(bin_dir):
    compose = os.path.join(ROOT, "docker-compose.yaml")
    r = subprocess.run(["docker-compose", "-f", compose, "config", "-q"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"docker-compose config: {r.stderr.strip()}")
    print("PASS docker-compose config")

    with open(compose) as f:
        spec = yaml.safe_load(f)
    helps = {}
    env_files = set()
    for name, svc in spec["services"].items():
        if "build" not in svc:
            continue
        cmd = svc["command"]
        binary = os.path.join(bin_dir, cmd[0])
        r = subprocess.run([binary, *cmd[1:], "--help"], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"service {name}: `{' '.join(cmd)}` is rejected: {r.stderr.strip().splitlines()[0]}")
        helps[name] = r.stdout
        env_files.add(svc["env_file"] if isinstance(svc["env_file"], str) else svc["env_file"][0])
        print(f"PASS service {name}: {' '.join(cmd)}")

    all_help = "\n".join(helps.values())
    read_by_binaries = set(re.findall(r"\[env: ([A-Z0-9_]+)=", all_help))
    for env_file in sorted(env_files):
        with open(os.path.join(ROOT, env_file)) as f:
            names = [l.split("=", 1)[0] for l in f if "=" in l and not l.lstrip().startswith("#")]
        unknown = [n for n in names if n not in read_by_binaries and n not in LIBRARY_VARS]
        if unknown:
            fail(f"{env_file}: no service reads {', '.join(unknown)}")
        print(f"PASS {env_file}: all {len(names)} variables are read")


if __name__ == "__main__":
    main(sys.argv[1])
