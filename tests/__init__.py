"""kvraft tests: tests/unit (pure logic), tests/component (in-process clusters over fakes),
tests/integration (real processes); shared harnesses in tests/harness."""
