"""The dashboard at ``/`` in a real headless browser (Debian's chromium driven by Playwright).

The page must show what ``/cluster`` says (nodes, leader, partition map), update itself by
polling (no reload), mark a killed node down, ask for the token when the node has one, and run
without script errors or Content-Security-Policy violations. A screenshot of each run is saved
under the test's tmp directory.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
import requests
from playwright.sync_api import sync_playwright

from tests.harness.cluster import Cluster, wait_for

CHROMIUM = os.environ.get("KVRAFT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TOKEN = "dashboard-test-token"

# what the page shows: {node id: (alive, is_leader)}, the leader, and the partition map cells
SHOWN = """() => {
  const rows = {};
  for (const tr of document.querySelectorAll('#nodes tbody tr[data-node]')) {
    rows[tr.dataset.node] = [tr.dataset.alive === 'true', tr.dataset.leader === 'true'];
  }
  const cells = [];
  for (const c of document.querySelectorAll('#pmap .cell[data-state="held"]')) {
    cells.push([c.dataset.part, c.dataset.node]);
  }
  return {rows, leader: document.getElementById('leader').textContent, cells};
}"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: scripts/install-test-deps.sh installs it")
    with sync_playwright() as p:
        # a fresh profile; Playwright refuses --user-data-dir in args, so it is given here
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


def _page(browser):
    """A new tab that records script errors and CSP violations (console errors)."""
    page = browser.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    return page


def _expected(view: dict) -> dict:
    rows = {n["id"]: [n["alive"], n["is_leader"]] for n in view["nodes"]}
    cells = sorted([p, n] for p, reps in view["partitions"].items() for n in reps)
    return {"rows": rows, "leader": view["leader"], "cells": cells}


def _matches(page, c: Cluster, i: int = 0) -> bool:
    shown = page.evaluate(SHOWN)
    shown["cells"] = sorted(shown["cells"])
    return shown == _expected(c.cluster_view(i))


def _write_while(c: Cluster, stop: threading.Event, limit: int = 400) -> None:
    for n in range(limit):
        if stop.is_set():
            return
        c.put(n % len(c.nodes), f"dash/{n}", b"x" * 100)


def test_dashboard_shows_the_cluster_and_marks_a_killed_node_down(fresh_cluster, browser, tmp_path):
    c = fresh_cluster
    page = _page(browser)
    page.goto(c.url(0) + "/")
    page.wait_for_selector("#nodes tbody tr[data-node]", timeout=10_000)
    page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads

    # nodes, leader and partition map are those of /cluster (the page polls every second)
    wait_for(lambda: _matches(page, c), 10, "the page to show what /cluster says")
    assert page.locator("#nodes tbody tr").count() == 3
    leader = c.cluster_view(0)["leader"]
    assert page.locator(f'#nodes tr[data-node="{leader}"] td.role').inner_text() == "leader"
    assert page.locator("#pmap .cell").count() == 64 * 3

    # a live feed: operations per second show up while clients write
    stop = threading.Event()
    writer = threading.Thread(target=_write_while, args=(c, stop), daemon=True)
    writer.start()
    try:
        page.wait_for_function(
            "() => parseFloat(document.getElementById('ops-total').textContent) > 0", timeout=15_000
        )
    finally:
        stop.set()
        writer.join(timeout=15)
    assert page.locator("#ops-chart polyline").count() >= 1

    # kill a node that is neither the leader nor the node serving the page
    victim = next(i for i in (1, 2) if c.nodes[i].id != leader)
    victim_id = c.nodes[victim].id
    c.kill(victim)
    page.wait_for_selector(
        f'#nodes tr[data-node="{victim_id}"][data-alive="false"]', timeout=20_000
    )
    assert page.locator(f'#nodes tr[data-node="{victim_id}"] td.alive').inner_text() == "down"
    assert "(down)" in page.locator(f'#pmap .name[data-node="{victim_id}"]').inner_text()
    assert page.locator("#nodes-up").inner_text() == "2 / 3"
    assert page.evaluate("() => window.__sameDocument") is True, "the page reloaded"
    wait_for(lambda: _matches(page, c), 10, "the page to agree with /cluster after the kill")

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("KVRAFT_DASHBOARD_PNG"):  # to refresh docs/dashboard.png by hand
        shutil.copy(shot, os.environ["KVRAFT_DASHBOARD_PNG"])
    assert page.errors == [], page.errors
    page.close()


def test_dashboard_asks_for_the_token_and_keeps_it_in_the_tab(tmp_path, browser):
    c = Cluster(str(tmp_path), env={"KVRAFT_TOKEN": TOKEN})
    c.http.headers["Authorization"] = f"Bearer {TOKEN}"  # the harness's own requests
    with c:
        page = _page(browser)
        bare = requests.get(c.url(0) + "/", timeout=5)
        if bare.status_code == 401:
            # the app's guard does not let the (data-free) page through yet: hand the token to
            # the page load only, so the page's own requests still go without it
            def with_token(route):
                route.continue_(
                    headers={**route.request.headers, "authorization": f"Bearer {TOKEN}"}
                )

            page.route(c.url(0) + "/", with_token)
        else:
            assert bare.status_code == 200 and "kvraft" in bare.text
            for node in c.nodes:  # served without the token, so it must hold no data
                assert node.http not in bare.text
        page.goto(c.url(0) + "/")
        page.wait_for_selector("#login:not([hidden])", timeout=10_000)
        assert page.locator("#main").is_hidden()
        assert page.locator("#nodes tbody tr").count() == 0

        page.fill("#token", "wrong-token")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#login-error:not([hidden])", timeout=10_000)
        assert page.locator("#nodes tbody tr").count() == 0

        page.fill("#token", TOKEN)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#nodes tbody tr[data-node]", timeout=10_000)
        assert page.locator("#login").is_hidden()
        assert page.evaluate("() => sessionStorage.getItem('kvraft.token')") == TOKEN
        assert page.locator("#leader").inner_text() != "-"

        page.reload()  # the token stays for this tab: no prompt again
        page.wait_for_selector("#nodes tbody tr[data-node]", timeout=10_000)
        assert page.locator("#login").is_hidden()
        time.sleep(0.2)
        page.screenshot(path=str(tmp_path / "dashboard-token.png"))
        # a wrong token shows as refused; the only errors are the browser's 401 lines
        assert all("401" in e for e in page.errors), page.errors
        page.close()
