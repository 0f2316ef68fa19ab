"""Command line of the course kit: ``python -m course_utils doctor``, and ``install-verdict`` (scripts/setup.sh)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m course_utils", description="Course kit tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    doctor_cmd = commands.add_parser("doctor", help="check this environment for the labs; paste its output when "
                                                    "asking for help")
    doctor_cmd.add_argument("--grading", action="store_true",
                            help="also check what an instructor needs to grade safely (the sandbox)")
    doctor_cmd.add_argument("--online", action="store_true",
                            help="also check that the hosts torchvision downloads missing datasets from answer "
                                 "(uses the network)")
    commands.add_parser("install-verdict", help="install the Validate button's verdict (a JupyterLab and a server "
                                                 "extension) into this environment; scripts/setup.sh runs it")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from .doctor import main as doctor

        return doctor(grading=args.grading, online=args.online)
    if args.command == "install-verdict":
        from .validate_button import install

        for path in install():
            print(f"installed {path}")
        print("restart JupyterLab to see the verdict in Validate's dialog")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
