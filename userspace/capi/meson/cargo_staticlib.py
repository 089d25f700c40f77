#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Builds libextmem.a with cargo for meson.build and copies it to meson's output path.

usage: cargo_staticlib.py CARGO MANIFEST PROFILE OUTPUT

The library's path is read from cargo's own JSON messages, so a workspace target
directory, CARGO_TARGET_DIR or a build.target-dir setting are all honoured.
"""

import json
import os
import shutil
import subprocess
import sys


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    cargo, manifest, profile, output = sys.argv[1:]
    # Through a symlinked subproject the path is not the one the workspace lists, and
    # cargo would refuse the package as outside its workspace.
    manifest = os.path.realpath(manifest)
    command = [
        cargo, "build", "--manifest-path", manifest, "--lib", "--profile", profile,
        "--message-format=json-render-diagnostics",
    ]
    run = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if run.returncode != 0:
        print(f"{' '.join(command)} failed with status {run.returncode}", file=sys.stderr)
        return run.returncode
    staticlibs = []
    for line in run.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact":
            continue
        # The core crate's library is called extmem too: tell them apart by manifest.
        if os.path.realpath(message.get("manifest_path", "")) != manifest:
            continue
        staticlibs += [f for f in message.get("filenames", []) if f.endswith(".a")]
    if len(staticlibs) != 1:
        print(f"cargo reported {len(staticlibs)} static libraries for extmem-capi: "
              f"{staticlibs}", file=sys.stderr)
        return 1
    shutil.copyfile(staticlibs[0], output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
