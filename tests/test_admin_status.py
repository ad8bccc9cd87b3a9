"""The admin status page in a real browser (headless Chromium): staff only, as the admin site's
own ``has_permission`` decides (a hardened site's too); every node of a discovered cluster with
memcached's stats and this process's counters; a frozen node said plainly. The page is served
by a Django project of its own (``tests/support/admin_site``) in a subprocess, as a deployment
would serve it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from django_elasticache_rs.local import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a-test-password-1"
# Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them). Selenium is
# given both paths so that it never tries to download a browser or a driver.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT = 30  # seconds: the bound of every wait on the page; reached only on failure


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(nodes=3) as running:
        yield running


@pytest.fixture
def site(cluster: LocalCluster, tmp_path: Path) -> Iterator[str]:
    """The admin site's base URL, served by a subprocess until the test ends."""
    with serving(cluster, tmp_path) as url:
        yield url


@pytest.fixture
def two_factor_site(cluster: LocalCluster, tmp_path: Path) -> Iterator[str]:
    """The same with a hardened default admin site: its ``has_permission`` refuses staff users
    without a second factor (``tests/support/admin_site/two_factor.py``)."""
    with serving(cluster, tmp_path, admin_site="two-factor") as url:
        yield url


@pytest.fixture
def linked_site(cluster: LocalCluster, tmp_path: Path) -> Iterator[str]:
    """The same with ``ElastiCacheAdminConfig`` in place of ``django.contrib.admin``."""
    with serving(cluster, tmp_path, admin_site="linked") as url:
        yield url


@contextlib.contextmanager
def serving(cluster: LocalCluster, tmp_path: Path, **extra: str) -> Iterator[str]:
    config = {
        "location": cluster.configuration_endpoint,
        "database": str(tmp_path / "admin.sqlite3"),
        "users": {"staff": "operator", "visitor": "visitor", "password": PASSWORD},
        **extra,
    }
    env = {**os.environ, "ADMIN_SITE": json.dumps(config), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.admin_site.serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        assert port.isdigit(), f"the admin site did not start (exit {server.poll()})"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1700,900")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def log_in(browser: WebDriver, site: str, username: str) -> None:
    browser.get(f"{site}/admin/elasticache/")
    # Anyone not signed in is sent to the admin's login form, back to the page after it.
    WebDriverWait(browser, WAIT).until(lambda b: "/admin/login/" in b.current_url)
    assert "next=/admin/elasticache/" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def nodes(browser: WebDriver) -> dict[str, dict[str, str]]:
    """The page's node rows: address -> state and the cells the test reads."""
    rows = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#cache-default tr.node"):
        cells = {
            name: row.find_element(By.CSS_SELECTOR, f".{name}").text
            for name in ("state", "hits", "misses", "requests")
        }
        for optional in ("curr-items", "server-version", "node-error"):
            found = row.find_elements(By.CSS_SELECTOR, f".{optional}")
            cells[optional] = found[0].text if found else ""
        rows[row.get_attribute("data-node") or ""] = cells
    return rows


def test_a_visitor_who_is_not_staff_is_refused(site: str, browser: WebDriver) -> None:
    log_in(browser, site, "visitor")
    # The admin refuses the login of a user who is not staff, and the page stays out of reach.
    note = WebDriverWait(browser, WAIT).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".errornote")
    )
    assert "staff account" in note[0].text
    assert "/admin/login/" in browser.current_url
    assert not browser.find_elements(By.CSS_SELECTOR, "#cache-default")


def test_a_hardened_admin_site_refusing_a_staff_user_keeps_the_page_from_them(
    two_factor_site: str, browser: WebDriver
) -> None:
    # The default admin site is one whose has_permission wants a second factor: the staff user
    # logs in, but the page applies the site's own rule, as every admin page does.
    log_in(browser, two_factor_site, "operator")
    refused = "You are authenticated as operator, but are not authorized"
    WebDriverWait(browser, WAIT).until(
        lambda b: refused in b.page_source or b.find_elements(By.ID, "cache-default")
    )
    assert refused in browser.page_source
    assert "/admin/login/" in browser.current_url
    assert "next=/admin/elasticache/" in browser.current_url
    assert not browser.find_elements(By.CSS_SELECTOR, "#cache-default")
    # Asked again directly: sent back to the login.
    browser.get(f"{two_factor_site}/admin/elasticache/")
    WebDriverWait(browser, WAIT).until(lambda b: "/admin/login/" in b.current_url)
    assert not browser.find_elements(By.CSS_SELECTOR, "#cache-default")


def test_staff_see_every_node_with_its_stats_and_counters(
    cluster: LocalCluster, site: str, browser: WebDriver, tmp_path: Path
) -> None:
    log_in(browser, site, "operator")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "cache-default"))
    assert browser.current_url == f"{site}/admin/elasticache/"
    assert browser.title.startswith("ElastiCache status")
    # textContent: the admin's style sheet shows captions in capitals.
    caption = browser.find_element(By.CSS_SELECTOR, "#cache-default caption")
    heading = " ".join((caption.get_attribute("textContent") or "").split())
    assert f"discovery via {cluster.configuration_endpoint}" in heading
    assert f"configuration version {cluster.version}, 3 nodes" in heading
    summary = browser.find_element(By.CSS_SELECTOR, "#cache-default .client-summary").text
    assert "1 discoveries (0 failed), 1 membership changes" in summary
    local = browser.find_element(By.CSS_SELECTOR, "#cache-default .local-tier").text
    assert "Local tier (local_cache): 0 keys kept now (0 B); 0 reads served" in local

    rows = nodes(browser)
    assert set(rows) == set(cluster.addresses)
    assert {row["state"] for row in rows.values()} == {"up"}
    assert all(row["server-version"].startswith("1.") for row in rows.values())
    # The site set one key, read it twice and missed another: the holder of the key counts the
    # hits, and the items memcached reports are that one key.
    assert sorted(row["curr-items"] for row in rows.values()) == ["0", "0", "1"]
    assert sum(int(row["hits"]) for row in rows.values()) == 2
    assert sum(int(row["misses"]) for row in rows.values()) == 1
    [holder] = [row for row in rows.values() if row["curr-items"] == "1"]
    assert holder["hits"] == "2" and int(holder["requests"]) >= 3

    # ?refresh=N reloads the page, never more often than every 2 s.
    assert not browser.find_elements(By.CSS_SELECTOR, "meta[http-equiv=refresh]")
    browser.get(f"{site}/admin/elasticache/?refresh=1")
    [meta] = browser.find_elements(By.CSS_SELECTOR, "meta[http-equiv=refresh]")
    assert meta.get_attribute("content") == "2"
    browser.get(f"{site}/admin/elasticache/")

    screenshot = Path(os.environ.get("ADMIN_STATUS_SCREENSHOT", tmp_path / "status.png"))
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_frozen_node_is_shown_down_with_the_reason(
    cluster: LocalCluster, site: str, browser: WebDriver
) -> None:
    log_in(browser, site, "operator")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "cache-default"))
    frozen = cluster.nodes[0]
    cluster.freeze_node(frozen.address)
    try:
        browser.refresh()
        WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "cache-default"))
        rows = nodes(browser)
        assert rows[frozen.address]["state"] == "down"
        assert "no answer" in rows[frozen.address]["node-error"]
        assert all(
            row["state"] == "up" for address, row in rows.items() if address != frozen.address
        )
    finally:
        cluster.thaw_node(frozen.address)


def test_a_killed_node_is_shown_marked_down_with_the_failure_that_marked_it(
    cluster: LocalCluster, site: str, browser: WebDriver
) -> None:
    log_in(browser, site, "operator")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "cache-default"))
    killed = cluster.addresses[0]
    cluster.kill_node(killed)

    def left_alone_for_refusing(b: WebDriver) -> dict[str, str] | None:
        # Each load probes the node once. The first failure may be its pooled connection's
        # end (closed mid-reply); once paused, a new connection is refused.
        b.refresh()
        WebDriverWait(b, WAIT).until(lambda b: b.find_elements(By.ID, "cache-default"))
        row = nodes(b)[killed]
        error = row["node-error"]
        return row if "last failure:" in error and "Connection refused" in error else None

    # The cause, not only that the node is left alone: the refused connection.
    row = WebDriverWait(browser, WAIT).until(left_alone_for_refusing)
    assert row["state"] == "down"
    assert "left alone for" in row["node-error"]
    # Its client hit ratio is not shown as if it were healthy.
    [cell] = browser.find_elements(
        By.CSS_SELECTOR, f'#cache-default tr.node[data-node="{killed}"] .client-hit-ratio'
    )
    assert cell.text == "node down"


def test_the_admin_index_links_to_the_page_without_a_template(
    linked_site: str, browser: WebDriver
) -> None:
    log_in(browser, linked_site, "operator")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "cache-default"))
    browser.get(f"{linked_site}/admin/")
    links = WebDriverWait(browser, WAIT).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, 'a[href="/admin/elasticache/"]')
    )
    links[0].click()
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "cache-default"))
    assert browser.current_url == f"{linked_site}/admin/elasticache/"


def test_the_default_admin_index_has_no_link(site: str, browser: WebDriver) -> None:
    # Without the mixin the admin is left as it is (the link is opt-in).
    log_in(browser, site, "operator")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "cache-default"))
    browser.get(f"{site}/admin/")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "content-main"))
    assert not browser.find_elements(By.CSS_SELECTOR, 'a[href="/admin/elasticache/"]')
