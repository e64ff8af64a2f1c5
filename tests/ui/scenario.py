"""The issue's scenario in a real browser (headless chromium through chromium-driver).

Log in (a wrong password first: refused), create a vhost and a user, declare a queue through the
form, publish a message on its page, get it back and see its body, see the queue's count and
its publish-rate chart change, force-close a connection, visit every page, delete the queue;
a monitoring user sees no delete, purge, publish or add buttons. Every page is screenshotted
into $RINGMQ_UI_SCREENS and each screenshot is checked (a non-empty PNG, taken while the text
expected on that page is in the DOM). Every wait has a timeout; nothing sleeps to synchronise.
"""

import os
import sys
import time
import urllib.request

import pika
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["RINGMQ_UI_URL"]
AMQP_PORT = int(os.environ["RINGMQ_AMQP_PORT"])
SCREENS = os.environ["RINGMQ_UI_SCREENS"]
PROFILE = os.environ["RINGMQ_UI_PROFILE"]
WAIT_S = 20
# Rates need two API samples around the publish; the page polls every 5 s.
CHART_WAIT_S = 40
HTTP_READY_S = 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

VHOST = "ui-vhost"
QUEUE = "ui-q"
MONITOR = "ui-monitor"
BODY = "hello from the browser"


def wait_http_ready():
    deadline = time.monotonic() + HTTP_READY_S
    while True:
        try:
            with urllib.request.urlopen(URL, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"management UI not answering at {URL}")
        # Polling a socket that is not listening yet: a short pause between attempts, bounded
        # by the deadline above (not synchronisation with the page).
        time.sleep(0.1)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update",
                     f"--user-data-dir={PROFILE}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


def patient_wait(driver, timeout):
    """A wait that tries again when the page's live refresh replaced an element between
    finding it and reading it (a stale element is a moment's race, not a failure)."""
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))


class Ui:
    def __init__(self, driver):
        self.d = driver
        self.wait = patient_wait(driver, WAIT_S)
        self.shots = []

    def el(self, css):
        return self.wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)), f"no {css}")

    def text_in(self, css, text, timeout=WAIT_S):
        patient_wait(self.d, timeout).until(
            EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text), f"{css} never showed {text!r}")

    def text_is(self, css, text, timeout=WAIT_S):
        def check(d):
            found = d.find_elements(By.CSS_SELECTOR, css)
            return bool(found) and found[0].text.strip() == text
        patient_wait(self.d, timeout).until(check, f"{css} never read {text!r}")

    def absent(self, css):
        assert not self.d.find_elements(By.CSS_SELECTOR, css), f"{css} is shown and should not be"

    def type(self, css, text):
        field = self.el(css)
        field.clear()
        field.send_keys(text)

    def click(self, css):
        self.wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, css)), f"{css} not clickable").click()

    def accept_confirm(self):
        self.wait.until(EC.alert_is_present(), "no confirmation asked").accept()

    def go(self, hash_route, ready_css):
        """Another page of the app without reloading it: the samples behind the live charts
        stay in the page, as when an operator clicks through the menu."""
        self.d.execute_script("location.hash = arguments[0]", hash_route)
        return self.el(ready_css)

    def login(self, user, password):
        self.d.get(URL)
        self.type("#login-username", user)
        self.type("#login-password", password)
        self.click("#login-submit")

    def logout(self):
        self.click("#logout")
        self.el("#login-username")

    def chart_max(self, css, series):
        # One script reads the element and its attribute, so a re-render cannot fall between.
        value = self.d.execute_script(
            "const e = document.querySelector(arguments[0]);"
            " return e ? e.getAttribute(arguments[1]) : null;", css, f"data-series-max-{series}")
        return float(value or 0)

    def wait_chart_above_zero(self, css, series):
        patient_wait(self.d, CHART_WAIT_S).until(
            lambda _: self.chart_max(css, series) > 0, f"{css} never drew {series} above 0")

    def shot(self, name, expected):
        """Screenshot `name` once every `expected` text is in the DOM, then check the file."""
        for text in expected:
            patient_wait(self.d, WAIT_S).until(
                lambda d: text in d.find_element(By.TAG_NAME, "body").text, f"{name}: no {text!r}")
        path = os.path.join(SCREENS, f"{name}.png")
        assert self.d.save_screenshot(path), f"screenshot {path} failed"
        with open(path, "rb") as f:
            data = f.read()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), f"{path} is not a PNG"
        self.shots.append(name)
        print(f"ui: screenshot {name}.png ({len(data)} bytes) with {expected}", flush=True)


def scenario(ui):
    # Login: a wrong password is refused, the right one lets in.
    ui.login("guest", "not-the-password")
    ui.text_in("#login-error", "Login failed")
    ui.shot("login", ["Username", "Login failed"])
    ui.login("guest", "guest")
    ui.el("#nav-overview")
    ui.el("#totals")
    ui.text_in("#who", "guest")

    # Admin: a vhost, a monitoring user with permissions on it.
    ui.go("#/admin", "#add-vhost")
    ui.type("#vhost-name", VHOST)
    ui.click("#add-vhost-submit")
    ui.text_in("#vhosts-table", VHOST)
    ui.type("#user-name", MONITOR)
    ui.type("#user-password", "pw")
    ui.type("#user-tags", "monitoring")
    ui.click("#add-user-submit")
    ui.text_in("#users-table", MONITOR)
    ui.type("#permission-user", MONITOR)
    ui.type("#permission-vhost", VHOST)
    ui.click("#set-permission-submit")
    ui.text_in("#permissions-table", MONITOR)
    ui.shot("admin", ["Users", "Virtual hosts", "Permissions", "Policies", VHOST, MONITOR])

    # Queues: declare through the form, with an argument from the picker.
    ui.go("#/queues", "#add-queue-section")
    ui.click("#add-queue-section > summary")
    Select(ui.el("#queue-vhost")).select_by_value(VHOST)
    ui.type("#queue-name", QUEUE)
    ui.click("#queue-arguments + .arg-picker a[data-arg='x-max-length']")
    value = ui.el("#queue-arguments .arg-row .arg-value")
    value.send_keys("1000")
    ui.click("#add-queue-submit")
    ui.text_in("#flash", f"Queue {QUEUE} added")
    ui.type("#queues-filter", "^ui-")
    ui.click("#queues-regex")
    ui.text_in("#queues-table", QUEUE)
    ui.text_in("#queues-table", "Lim")
    ui.text_in("#queues-count", "1 item")
    ui.shot("queues", ["Queues", QUEUE, "Lim", "Ready", "Unacked", "Incoming"])

    # Its page: publish, see the count and the publish-rate chart move, get the body back.
    ui.click(f"#queues-table a.queue-link")
    ui.text_is("#queue-title", QUEUE)
    ui.text_is("#queue-total", "0")
    ui.type("#publish-payload", BODY)
    ui.click("#publish-submit")
    ui.text_in("#publish-result", "Message published.")
    ui.text_is("#queue-total", "1")
    ui.text_is("#queue-ready", "1")
    ui.wait_chart_above_zero("svg[data-chart^='queue-rates']", "publish")
    Select(ui.el("#get-ackmode")).select_by_value("ack_requeue_true")
    ui.click("#get-submit")
    ui.text_is("#get-results pre.payload", BODY)
    ui.text_is("#queue-total", "1")
    ui.shot("queue", [QUEUE, BODY, "Publish message", "Get messages", "Delete queue", "Message rates"])

    # Connections and channels: one client, force-closed from the page.
    client = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", AMQP_PORT, heartbeat=0,
        client_properties={"connection_name": "ui-client"}))
    client.channel()
    try:
        ui.go("#/channels", "#channels-table")
        ui.text_in("#channels-table", "guest")
        ui.shot("channels", ["Channels", "Prefetch", "guest"])
        ui.go("#/connections", "#connections-table")
        ui.text_in("#connections-table", "ui-client")
        ui.shot("connections", ["Connections", "ui-client", "Force close"])
        ui.click("#connections-table button[data-close]")
        ui.accept_confirm()
        ui.text_in("#flash", "Closed connection")
        ui.text_in("#connections-table", "None")
    finally:
        try:
            client.close()
        except Exception:  # already closed by the broker, as intended
            pass

    ui.go("#/exchanges", "#exchanges-table")
    ui.text_in("#exchanges-table", "amq.topic")
    ui.shot("exchanges", ["Exchanges", "amq.direct", "amq.topic", "Add a new exchange"])
    ui.go("#/exchanges/%2F/amq.direct", "#exchange-info")
    ui.shot("exchange", ["Exchange: amq.direct", "Bindings from this exchange", "Publish message"])

    ui.go("#/shards", "#shards-table")
    patient_wait(ui.d, WAIT_S).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#shards-table tr[data-shard]")) == 2,
        "the Shards page does not show the broker's two shards")
    ui.el("#links-table")
    ui.shot("shards", ["Shards", "Busy", "Mesh links", "fdatasync", "--trace-latency"])

    ui.go("#/overview", "#totals")
    ui.wait_chart_above_zero("svg[data-chart='overview-rates']", "publish")
    ui.shot("overview", ["Overview", "Queued messages", "Message rates", "Nodes", "Connections"])

    # A monitoring user sees the queue and cannot change it.
    ui.logout()
    ui.login(MONITOR, "pw")
    ui.text_in("#who", "read-only")
    ui.go(f"#/queues/{VHOST}/{QUEUE}", "#queue-info")
    ui.text_is("#queue-total", "1")
    for css in ("#delete-queue", "#purge-queue", "#publish-form", "#get-form", "#bind-form"):
        ui.absent(css)
    ui.go("#/queues", "#queues-table")
    ui.text_in("#queues-table", QUEUE)
    ui.absent("#add-queue")
    ui.go("#/admin", "#vhosts-table")
    for css in ("#add-vhost", "#add-user", "#set-permission", "#add-policy", "#vhosts-table button"):
        ui.absent(css)
    ui.shot("monitoring", ["read-only", "Virtual hosts", VHOST])
    ui.logout()

    # Back as the administrator: delete the queue from its page.
    ui.login("guest", "guest")
    ui.el("#totals")
    ui.go(f"#/queues/{VHOST}/{QUEUE}", "#delete-queue")
    ui.click("#delete-queue")
    ui.accept_confirm()
    patient_wait(ui.d, WAIT_S).until(lambda d: d.current_url.endswith("#/queues"), "not back on the list")
    ui.type("#queues-filter", QUEUE)
    ui.text_in("#queues-count", "0 items")
    ui.text_in("#queues-table", "None")


def main():
    wait_http_ready()
    driver = browser()
    ui = Ui(driver)
    try:
        scenario(ui)
    except (AssertionError, TimeoutException) as failure:
        path = os.path.join(SCREENS, "failure.png")
        driver.save_screenshot(path)
        print(f"ui: FAILED: {failure}\nui: at {driver.current_url}; screenshot {path}", file=sys.stderr)
        for entry in driver.get_log("browser") if hasattr(driver, "get_log") else []:
            print(f"ui: console: {entry}", file=sys.stderr)
        return 1
    finally:
        driver.quit()
    print(f"ui: passed, {len(ui.shots)} screenshots: {', '.join(ui.shots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
