//! What the multi-process examples (`load`, `memory`) share: running this
//! example binary again as a child in another mode, and the gateway mode.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves a gateway in front of the mock at `mock_url` (an `openai`
/// upstream `mock`, model `m`; `upstream_extra`: more TOML lines for the
/// upstream) and prints its base URL.
pub(crate) async fn serve_gateway(mock_url: &str, upstream_extra: &str) -> Result<(), BoxError> {
    let toml = format!(
        "[[upstreams]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock_url}\"\n{upstream_extra}\n[[routes]]\nmodel = \"m\"\ntargets = [\"mock\"]\n"
    );
    let gateway =
        palisade_gateway::Gateway::new(palisade_gateway::Config::parse(&toml, "example")?)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}/v1", listener.local_addr()?);
    palisade_gateway::serve(listener, gateway, std::future::pending()).await?;
    Ok(())
}

/// Runs this example in `mode` and reads the base URL it prints.
pub(crate) fn child(mode: &[&str]) -> Result<(Child, String), BoxError> {
    let mut c = Command::new(std::env::current_exe()?)
        .args(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = c.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok((c, line.trim().to_owned()))
}

/// Stops the child processes.
pub(crate) fn stop(children: &mut [&mut Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}
