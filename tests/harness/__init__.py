"""Shared test harnesses: a real cluster on loopback (cluster), docker-compose.yml run as local
processes (compose_local), the schemathesis API fuzz (apifuzz, schemathesis_hooks), and the
in-process cluster of the component tier (inproc). Imported as
``tests.harness.<module>`` from the repository root by tests, chaos/ and bench/."""
