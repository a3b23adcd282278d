"""`basalt completion bash|zsh`: tab completion of commands, subcommands and options.

Completion is argcomplete's: the shell asks ``basalt`` itself (with
``_ARGCOMPLETE`` set) what may follow the words typed so far, so it always
matches the installed CLI. Install with one of:

    echo 'eval "$(basalt completion bash)"' >> ~/.bashrc
    echo 'eval "$(basalt completion zsh)"' >> ~/.zshrc
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any


def complete_if_asked(build_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Answer a shell's completion request and exit; return at once otherwise."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete
    argcomplete.autocomplete(build_parser())  # exits when it answered


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete
    sys.stdout.write(argcomplete.shellcode(["basalt"], shell=args.shell))
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``completion`` command to the CLI."""
    p = add(sub, "completion", help="print the shell code for tab completion "
            "(eval \"$(basalt completion bash)\" in ~/.bashrc)")
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=cmd_completion)
