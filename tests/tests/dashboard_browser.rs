//! The task dashboard in a real browser: headless Chromium, driven over WebDriver by
//! chromedriver, against the quickstart binary. Jobs posted over HTTP show on the page within
//! 2 s, a panicking job's message shows in the failures, and a task named `<script>` shows as
//! text.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; `CHROMIUM` and `CHROMEDRIVER` name others), which `.ci/run`
//! installs when they are missing. Without them the test says so and skips, but under CI (`CI`
//! set) it fails, so that a CI run cannot pass without having run it.
//!
//! With `DASHBOARD_SCREENSHOT=<path>` set, it saves a screenshot of the page with tasks
//! running there (how `docs/img/dashboard.png` is made).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use background_tasks_e2e::{Server, client, eventually};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// What the issue asks of the page: a change shows within 2 s (it polls every second).
const WITHIN: Duration = Duration::from_secs(2);

const SCRIPT_NAME: &str = "<script>alert(1)</script>";

/// chromedriver as a child process, killed when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser's binaries, or `None` (after saying why) when they are missing outside CI.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let path = |variable: &str, default: &str| {
        PathBuf::from(std::env::var_os(variable).unwrap_or_else(|| default.into()))
    };
    let chromium = path("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = path("CHROMEDRIVER", "/usr/bin/chromedriver");
    if chromium.is_file() && chromedriver.is_file() {
        return Some((chromium, chromedriver));
    }
    let message = format!(
        "the dashboard's browser test needs {} and {}: `apt-get install -y chromium \
         chromium-driver` (as .ci/run does), or set CHROMIUM and CHROMEDRIVER",
        chromium.display(),
        chromedriver.display()
    );
    assert!(std::env::var_os("CI").is_none(), "under CI: {message}");
    // Past the harness's capture of a passing test's output.
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("\n*** SKIPPED: {message} ***\n").as_bytes());
    None
}

async fn start_chromedriver(binary: &PathBuf) -> Chromedriver {
    // A free port: bound, read, released; chromedriver takes it a moment later.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Chromedriver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    let http = client();
    eventually(
        "chromedriver to answer /status",
        Duration::from_secs(20),
        || {
            let request = http.get(&status).send();
            async move { request.await.ok().filter(|r| r.status().is_success()) }
        },
    )
    .await;
    driver
}

async fn open_browser(
    driver: &Chromedriver,
    chromium: &PathBuf,
    profile: &tempfile::TempDir,
) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1100,1300",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    // chromedriver speaks plain HTTP on localhost: no TLS connector needed.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("chromedriver starts a headless Chromium session")
}

/// The text of the element `css`, or "" when it is not there yet.
async fn text(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn post_job(http: &reqwest::Client, server: &Server, query: &str) {
    server.post_job(http, query).await;
}

/// Waits up to `within` for the text of `css` to satisfy `check`; returns it and how long it
/// took.
async fn page_shows(
    browser: &Client,
    css: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let seen = text(browser, css).await;
        if check(&seen) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "the page did not show {what} within {within:?}: {css} reads {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_jobs_failures_and_names_as_text_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser_binaries() else {
        return;
    };
    let server = Server::quickstart(&[]);
    let driver = start_chromedriver(&chromedriver).await;
    let profile = tempfile::tempdir().expect("a temp dir for the browser profile");
    let browser = open_browser(&driver, &chromium, &profile).await;
    let http = client();

    browser
        .goto(&server.url("/dashboard/"))
        .await
        .expect("the dashboard loads");
    // The first refresh: the heartbeat, the quickstart's startup task, runs.
    page_shows(
        &browser,
        "#phase",
        Duration::from_secs(10),
        "the phase",
        |phase| phase == "running",
    )
    .await;
    page_shows(&browser, "#running", WITHIN, "the heartbeat", |n| n == "1").await;

    for _ in 0..3 {
        post_job(&http, &server, "duration_ms=60000&kind=async").await;
    }
    let took = page_shows(&browser, "#running", WITHIN, "3 more running tasks", |n| {
        n == "4"
    })
    .await;
    eprintln!("the running count changed on the page {took:?} after the jobs were posted");
    page_shows(
        &browser,
        "#by-name tr[data-name='async-job'] td:nth-child(2)",
        WITHIN,
        "the jobs by name",
        |n| n == "3",
    )
    .await;

    post_job(&http, &server, "duration_ms=0&kind=panic").await;
    page_shows(&browser, "#failures", WITHIN, "the panic message", |rows| {
        rows.contains("panic-job") && rows.contains("panic job failed on purpose after 0 ms")
    })
    .await;
    page_shows(&browser, "#panicked", WITHIN, "the panic count", |n| {
        n == "1"
    })
    .await;

    let name = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    post_job(
        &http,
        &server,
        &format!("duration_ms=60000&kind=cooperative&name={name}"),
    )
    .await;
    page_shows(
        &browser,
        "#by-name",
        WITHIN,
        "the <script> name as text",
        |rows| rows.contains(SCRIPT_NAME),
    )
    .await;
    page_shows(&browser, "#oldest", WITHIN, "the <script> task", |rows| {
        rows.contains(SCRIPT_NAME)
    })
    .await;
    // Text, not markup: no script element in the tables, and no alert opened.
    let injected = browser
        .find_all(Locator::Css("tbody script, tbody b"))
        .await
        .expect("a query of the page");
    assert!(injected.is_empty(), "a task name was parsed as HTML");
    assert!(
        browser.get_alert_text().await.is_err(),
        "a task name ran as a script"
    );
    let cell = browser
        .find(Locator::XPath(&format!(
            "//tbody[@id='by-name']//td[text()='{SCRIPT_NAME}']"
        )))
        .await
        .expect("a table cell whose text is the name itself");
    assert_eq!(cell.text().await.expect("its text"), SCRIPT_NAME);

    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        // A few more jobs, so that the picture shows a busy server.
        for query in [
            "duration_ms=60000&kind=blocking",
            "duration_ms=60000&kind=async&name=send-welcome-mail",
            "duration_ms=60000&kind=async&name=send-welcome-mail",
            "duration_ms=60000&kind=cooperative&name=resize-image",
        ] {
            post_job(&http, &server, query).await;
        }
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let png = browser.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).expect("the screenshot is written");
    }
    browser.close().await.expect("the browser closes");
    drop(driver);
}
