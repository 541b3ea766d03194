"""webdriver - a small W3C WebDriver client (urllib and json only) that runs
headless Chromium through chromedriver, for tests of pages esegeta writes.

Chromium starts with a new empty profile and without any background
networking; offline() also cuts the page off the network."""
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = os.environ.get("ESG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ESG_CHROMEDRIVER", "/usr/bin/chromedriver")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def available():
    return shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None


class Browser:
    def __init__(self, window="1400,1000"):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.base = "http://127.0.0.1:%d" % port
        self.profile = tempfile.mkdtemp(prefix="esg-chromium-")
        self.proc = subprocess.Popen([CHROMEDRIVER, "--port=%d" % port],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sid = None
        try:
            for _ in range(200):
                try:
                    self._req("GET", "/status")
                    break
                except OSError:
                    time.sleep(0.05)
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": ARGS + [
                    "--user-data-dir=" + self.profile, "--window-size=" + window]},
                "goog:loggingPrefs": {"browser": "ALL"}}}}
            self.sid = self._req("POST", "/session", caps)["sessionId"]
        except Exception:
            self.quit()
            raise

    def _req(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.base + path, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(r, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError("%s %s: %s" % (method, path, e.read()[:500].decode("utf-8", "replace")))

    def cmd(self, method, path, body=None):
        return self._req(method, "/session/%s%s" % (self.sid, path), body)

    def get(self, url):
        return self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        return self.cmd("POST", "/element", {"using": "css selector", "value": css})

    def keys(self, el, text):
        return self.cmd("POST", "/element/%s/value" % next(iter(el.values())), {"text": text})

    def click(self, el):
        return self.cmd("POST", "/element/%s/click" % next(iter(el.values())), {})

    def log(self):
        """The browser console since the last call (chromedriver's log endpoint)."""
        return self.cmd("POST", "/se/log", {"type": "browser"})

    def offline(self):
        return self.cmd("POST", "/chromium/network_conditions", {"network_conditions": {
            "offline": True, "latency": 0, "download_throughput": 0, "upload_throughput": 0}})

    def open_report(self, path):
        """Load an esg-render --html page with the network cut off; wait until
        its script has drawn it (body data-ready="1"); True if it did."""
        self.offline()
        self.get("file://" + os.path.abspath(path))
        for _ in range(200):
            if self.js("return document.readyState=='complete'&&document.body.dataset.ready||''") == "1":
                return True
            time.sleep(0.05)
        return False

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))

    def quit(self):
        try:
            if self.sid:
                self._req("DELETE", "/session/" + self.sid)
        except Exception:
            pass
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)
