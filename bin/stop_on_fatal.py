"""supervisord event listener (bin/supervisord.conf): when a program cannot start at all (a port in
use, a broken install), stop the whole run rather than leave a half-working service behind."""
import os
import signal
import sys

from supervisor import childutils


def main() -> None:
    while True:
        _, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        process = childutils.get_headers(payload.split("\n", 1)[0]).get("processname", "?")
        print(f"{process} could not start; stopping everything", file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)
        os.kill(os.getppid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
