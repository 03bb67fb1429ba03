"""Sends one error event to a DSN with the installed sentry-sdk and prints its event id.

Used by tests/tests/e2e/sdks.rs with sentry-sdk 1.x (which posts to the
store endpoint) and 2.x (which posts envelopes).

usage: python send_python.py DSN MESSAGE
"""

import sys

import sentry_sdk


def main() -> int:
    dsn, message = sys.argv[1], sys.argv[2]
    sentry_sdk.init(dsn=dsn, default_integrations=False, release="cyclops-tests@1")
    try:
        raise RuntimeError(message)
    except RuntimeError:
        event_id = sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=10)
    print(event_id)
    print(sentry_sdk.VERSION, file=sys.stderr)
    return 0 if event_id else 1


if __name__ == "__main__":
    sys.exit(main())
