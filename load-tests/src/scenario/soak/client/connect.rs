//! Getting a connection: a token from the backend, the next node, CONNECTED read and checked.

use super::*;

impl Client {
    pub(super) fn token_fetch(&self) -> TokenFuture {
        let (client_id, ttl) = (self.plan.client_id.clone(), self.plan.token_ttl);
        let nodes = self.world.nodes.clone();
        Box::pin(async move {
            nodes
                .any(|rest| {
                    let client_id = client_id.clone();
                    async move { rest.request_token(&client_id, Some(ttl)).await }
                })
                .await
        })
    }

    /// A connection to the next node, CONNECTED read and checked (a resume must keep its id).
    pub(super) async fn connect(&mut self) -> anyhow::Result<Connected> {
        let needed = if self.plan.renewable {
            self.plan.renew_lead + TOKEN_MARGIN
        } else {
            TOKEN_MARGIN
        };
        let token = match &self.token {
            Some((token, expires)) if *expires > Instant::now() + needed => token.clone(),
            _ => {
                let asked = Instant::now();
                let token = self.token_fetch().await.context("requestToken")?;
                self.token = Some((token.clone(), asked + self.plan.token_ttl));
                token
            }
        };
        let endpoints = self.world.nodes.endpoints.clone();
        let node = endpoints.pick();
        let mut url = format!(
            "{}?access_token={}&format={}&heartbeats={}&v=3",
            endpoints.ws(node),
            query_escape(&token),
            match self.plan.format {
                Format::Json => "json",
                Format::Msgpack => "msgpack",
            },
            self.plan.heartbeats
        );
        if let Some((_, key)) = &self.resumable {
            url.push_str(&format!("&resume={}", query_escape(key)));
        }
        let mut ws = match websocket(&url).await {
            Ok(ws) => ws,
            // A node that is draining or restarting refuses: the balancer would send us on.
            Err(_) if endpoints.is_draining(node) => {
                self.world.tally.count("connects refused while draining");
                bail_quietly()?
            }
            Err(error) => return Err(error),
        };
        let connected = tokio::time::timeout(REPLY_TIMEOUT, async {
            while let Some(frame) = ws.next().await {
                let Some(message) = decode(frame.context("reading CONNECTED")?)? else {
                    continue;
                };
                match message.action() {
                    Some(Action::Connected) => return Ok(message),
                    Some(Action::Heartbeat) => continue,
                    _ => return Err(anyhow!("{}", describe(&message))),
                }
            }
            Err(anyhow!("socket closed before CONNECTED"))
        })
        .await
        .map_err(|_| anyhow!("no CONNECTED in {REPLY_TIMEOUT:?}"))?;
        let connected = match connected {
            Ok(connected) => connected,
            Err(error) if endpoints.is_draining(node) => {
                self.world.tally.count("connects refused while draining");
                drop(error);
                bail_quietly()?
            }
            Err(error) => return Err(error),
        };
        let details = connected
            .connection_details
            .as_ref()
            .ok_or_else(|| anyhow!("CONNECTED without connectionDetails"))?;
        let id = connected.connection_id.clone().unwrap_or_default();
        let resumed = match self.resumable.take() {
            Some((old_id, _)) if old_id == id && connected.error.is_none() => {
                self.world.tally.count("resumes");
                true
            }
            Some((old_id, _)) => {
                self.fail_with(
                    "resume refused",
                    1,
                    format!(
                        "{old_id} came back as {id}{}",
                        connected
                            .error
                            .as_ref()
                            .map(|e| format!(" with error {} ({})", e.code, e.message))
                            .unwrap_or_default()
                    ),
                );
                self.start_afresh();
                false
            }
            None => false,
        };
        self.resumable = Some((id.clone(), details.connection_key.clone()));
        Ok(Connected {
            ws,
            node,
            id,
            max_idle: Duration::from_millis(details.max_idle_interval),
            resumed,
        })
    }
}

pub(super) struct Connected {
    pub(super) ws: Ws,
    pub(super) node: usize,
    pub(super) id: String,
    pub(super) max_idle: Duration,
    pub(super) resumed: bool,
}

/// A connect attempt that failed for an expected reason (a draining node): try again, uncounted.
fn bail_quietly<T>() -> anyhow::Result<T> {
    bail!(Expected)
}

#[derive(Debug)]
struct Expected;

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("node draining")
    }
}

impl std::error::Error for Expected {}

/// Whether a connect error was an expected refusal.
pub(super) fn is_expected(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Expected>().is_some()
}
