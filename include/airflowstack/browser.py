"""A headless Chromium driving Airflow's own UI, as an operator does (Selenium, chromedriver).

:func:`campaign_view` logs in through the UI's login form, finds the plugin's "DRP
campaign" entry in the navigation bar's Browse menu, opens a DAG run's page in the UI,
picks its "DRP campaign" tab (an external view: the UI shows our page in a frame), and
returns what the frame shows, with a screenshot of the whole window. :func:`dag_views`
checks what an operator sees of a big DAG: the run's grid and graph views, a mapped task's
list of map indexes (the groups' labels), and the trigger form refusing a bad Param. It uses Debian's
``chromium`` and ``chromium-driver`` (``make test`` installs them); Selenium does not
download a browser.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BrowserMissing", "CampaignView", "DagViews", "campaign_view", "dag_views", "find_browser"]

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver", "chromium-driver")


class BrowserMissing(RuntimeError):
    """No Chromium and chromedriver on PATH."""


@dataclass
class CampaignView:
    anonymous_text: str  # what the page shows without logging in
    nav_entry: bool  # the navigation bar's Browse menu has the "DRP campaign" entry
    frame_src: str  # the frame's URL inside the UI
    text: str  # the page's text, in the UI's frame
    map_loaded: bool  # the progress map image loaded (natural width > 0)
    screenshot: Path


@dataclass
class DagViews:
    grid_rows: int  # task and group rows the run's grid shows with every group expanded
    grid_names: list[str]  # their names, in order (what is rendered; the grid virtualises long lists)
    graph_nodes: int  # nodes of the run's graph view as it opens (task groups collapsed)
    graph_names: list[str]  # their first lines
    graph_nodes_expanded: int  # nodes with every task group expanded
    mapped_text: str  # a mapped task's page: its map indexes, shown by their labels
    trigger_error: str  # the trigger form's error for a bad campaign_file (no run is made)
    screenshots: dict[str, str]


def find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; `BrowserMissing` saying how to install them."""
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER) if p), None)
    if not (browser and driver):
        raise BrowserMissing("Chromium and chromedriver are needed (Debian: apt-get install chromium "
                             f"chromium-driver; found browser={browser}, driver={driver}); `make test` installs them")
    return browser, driver


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1400", "--no-first-run"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(fn, timeout: float, what: str):
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the page is still loading
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s" + (f" ({type(last).__name__}: {last})" if last else ""))


def campaign_view(url: str, username: str, password: str, dag_id: str, run_id: str, screenshot: Path,
                  timeout: float = 90.0) -> CampaignView:
    """Log in to the UI at ``url``, open the run's "DRP campaign" tab, read the framed page."""
    from urllib.parse import quote, urlencode

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = _driver()
    try:
        driver.get(f"{url}/drp-campaign/run?{urlencode({'dag_id': dag_id, 'run_id': run_id})}")
        anonymous = driver.find_element(By.TAG_NAME, "body").text
        _login(driver, url, username, password, timeout)
        driver.get(f"{url}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}")
        # The navigation bar's Browse menu lists the plugin's "DRP campaign" view.
        browse = _wait(lambda: driver.find_elements(
            By.XPATH, "//*[normalize-space(text())='Browse']/ancestor::button[1]"), timeout, "the Browse menu")
        browse[0].click()
        nav = bool(_wait(lambda: driver.find_elements(
            By.XPATH, "//*[@role='menu']//*[normalize-space(text())='DRP campaign']"), 10, "the Browse menu's entry"))
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        tab = _wait(lambda: next((e for e in driver.find_elements(By.XPATH, "//a|//button")
                                  if e.text.strip() == "DRP campaign" and e.is_displayed()), None), timeout,
                    "the run's DRP campaign tab")
        tab.click()
        frame = _wait(lambda: next((f for f in driver.find_elements(By.TAG_NAME, "iframe")
                                    if "/drp-campaign/" in (f.get_attribute("src") or "")), None), timeout,
                      "the framed campaign page")
        src = frame.get_attribute("src") or ""
        driver.switch_to.frame(frame)
        text = _wait(lambda: (t := driver.find_element(By.TAG_NAME, "body").text) and "DRP campaign" in t and t,
                     timeout, "the campaign page's text")
        imgs = driver.find_elements(By.CSS_SELECTOR, "img[alt='progress map']")
        loaded = bool(imgs) and bool(_wait(lambda: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", imgs[0]), timeout, "the progress map"))
        driver.switch_to.default_content()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        return CampaignView(anonymous_text=anonymous, nav_entry=nav, frame_src=src, text=text, map_loaded=loaded,
                            screenshot=screenshot)
    finally:
        driver.quit()


def _click(driver, by: str, selector: str, timeout: float, what: str) -> None:
    """Find and click, again if React re-rendered the element in between (a stale reference)."""
    def click() -> bool:
        driver.find_element(by, selector).click()
        return True

    _wait(click, timeout, what)


def _login(driver, url: str, username: str, password: str, timeout: float) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/auth/login/")
    _wait(lambda: driver.find_element(By.NAME, "username"), timeout, "the login form")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(lambda: driver.get_cookie("_token"), timeout, "the session cookie after logging in")


def dag_views(url: str, username: str, password: str, dag_id: str, run_id: str, mapped_task: str, out: Path,
              bad_campaign_file: str = "include/campaigns/relative.yaml", timeout: float = 90.0) -> DagViews:
    """Logged in: the run's grid (every group expanded), its graph (as it opens, then
    expanded), ``mapped_task``'s list of map indexes, and the DAG's trigger form submitted
    with ``bad_campaign_file`` (the error it shows). Screenshots of each under ``out``."""
    from urllib.parse import quote

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out.mkdir(parents=True, exist_ok=True)
    shots: dict[str, str] = {}

    def shot(name: str) -> None:
        path = out / f"{name}.png"
        driver.save_screenshot(str(path))
        shots[name] = str(path)

    run_page = f"{url}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"
    driver = _driver()
    try:
        _login(driver, url, username, password, timeout)
        driver.get(run_page)
        _click(driver, By.CSS_SELECTOR, "[data-testid='grid-view-button']", timeout, "the grid button")
        _click(driver, By.CSS_SELECTOR, "[aria-label='Expand all task groups']", timeout, "the grid's expand button")
        rows = _wait(lambda: (r := driver.find_elements(By.XPATH, "//a[contains(@href, '/tasks/')]")) and
                     len(r) > 20 and r, timeout, "the expanded grid's rows")
        grid_names = [r.text.strip() for r in rows]
        shot("grid")
        _click(driver, By.CSS_SELECTOR, "[aria-label='Collapse all task groups']", timeout, "collapse")
        _click(driver, By.CSS_SELECTOR, "[aria-label='Show Graph (Press g)']", timeout, "the graph button")
        time.sleep(1)  # the layout settles
        nodes = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".react-flow__node"), timeout, "the graph")
        graph_names = [n.text.split("\n")[0] for n in nodes]
        shot("graph")
        _click(driver, By.CSS_SELECTOR, "[aria-label='Expand all task groups']", timeout, "the graph's expand button")
        expanded = _wait(lambda: (n := driver.find_elements(By.CSS_SELECTOR, ".react-flow__node")) and
                         len(n) > len(nodes) and n, timeout, "the expanded graph")
        n_expanded = len(expanded)
        shot("graph_expanded")
        _click(driver, By.CSS_SELECTOR, "[aria-label='Collapse all task groups']", timeout, "collapse")
        _click(driver, By.CSS_SELECTOR, "[aria-label='Show Grid (Press g)']", timeout, "the grid button")
        driver.get(f"{run_page}/tasks/{quote(mapped_task)}/mapped")
        # The table's header comes before its rows (fetched apart), and while they load a row
        # may be a placeholder (the clean-clone CI read the header alone twice, 0.3 s apart):
        # wait for the count above the table ("2 Task Instances"; the tab's "Task Instances
        # [0]" is the task's own map index) to be non-zero, and for two reads that agree.
        seen: list[str] = []

        def mapped_rows() -> str | None:
            rows = driver.find_elements(By.XPATH, "//table//tbody/tr")
            text = driver.find_element(By.TAG_NAME, "body").text if rows else ""
            total = re.search(r"^(\d+) Task Instances?$", text, re.MULTILINE)
            loaded = bool(total) and int(total.group(1)) > 0 and any(r.text.strip() for r in rows)
            seen.append(text if loaded else "")
            return text if loaded and len(seen) > 1 and seen[-2] == text else None

        mapped_text = _wait(mapped_rows, timeout, "the mapped task's rows")
        shot("mapped")
        driver.get(f"{url}/dags/{quote(dag_id)}")
        _click(driver, By.XPATH, "//button[normalize-space(.)='Trigger']", timeout, "the Trigger button")
        field = _wait(lambda: driver.find_element(By.NAME, "element_campaign_file"), timeout, "the trigger form")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys(bad_campaign_file)
        dialog = "//*[@role='dialog'][.//input[@name='element_campaign_file']]"
        _click(driver, By.XPATH, f"{dialog}//button[normalize-space(.)='Trigger']", timeout, "the form's Trigger")
        error = _wait(lambda: (t := driver.find_element(By.XPATH, dialog).text) and "Invalid input" in t and t,
                      timeout, "the form's error")
        shot("trigger_refused")
        return DagViews(grid_rows=len(rows), grid_names=grid_names, graph_nodes=len(nodes), graph_names=graph_names,
                        graph_nodes_expanded=n_expanded, mapped_text=mapped_text,
                        trigger_error=error[:error.index("Logical Date")] if "Logical Date" in error else error,
                        screenshots=shots)
    finally:
        driver.quit()
