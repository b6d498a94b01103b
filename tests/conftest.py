import pytest

from tests.harness.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 3-node cluster shared by the tests of one module (they must not kill its nodes)."""
    with Cluster(str(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


@pytest.fixture
def fresh_cluster(tmp_path):
    """A 3-node cluster of the test's own, for tests that kill, stop or restart nodes."""
    with Cluster(str(tmp_path)) as c:
        yield c
