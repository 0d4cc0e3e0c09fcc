//! What the client checks as frames arrive: every promise the server made (`on_frame`), the
//! message order and latency per channel (`on_messages`), and what is still owed.

use super::*;

impl Client {
    /// Handles one protocol message; `Some` when the connection is over.
    pub(super) fn on_frame(
        &mut self,
        session: &mut Session,
        message: ProtocolMessage,
    ) -> Option<End> {
        let channel = message
            .channel
            .as_deref()
            .and_then(|name| self.plan.channels.iter().position(|(c, _)| c == name));
        match message.action() {
            Some(Action::Message) => self.on_messages(channel, message),
            Some(Action::Attached) => {
                let Some(i) = channel else {
                    self.fail_with("misrouted", 1, "ATTACHED for a channel never attached");
                    return None;
                };
                let resumed = message.flags.unwrap_or(0) & flags::RESUMED != 0;
                let why = || {
                    message
                        .error
                        .as_ref()
                        .map(|e| format!("error {} ({})", e.code, e.message))
                        .unwrap_or_else(|| "no error".to_owned())
                };
                let Some(resuming) = session.attaching[i].take() else {
                    // Unasked and not RESUMED: the server announces a gap (RTL12, 90003); what
                    // follows starts from its channelSerial, so count the gap, not what follows.
                    if !resumed {
                        self.fail_with(
                            "continuity lost (announced)",
                            1,
                            format!("{}: {}", self.plan.channels[i].0, why()),
                        );
                        self.orders[i].start(message.channel_serial.as_deref());
                    }
                    return None;
                };
                if resuming && !resumed {
                    let why = why();
                    self.fail_with(
                        "channel not resumed",
                        1,
                        format!("{} after a resume: {why}", self.plan.channels[i].0),
                    );
                }
                if !resumed {
                    self.orders[i].start(message.channel_serial.as_deref());
                    if i == self.plan.presence_on {
                        self.present = false;
                    }
                }
            }
            Some(Action::Connected) => {
                if session.auth_sent.take().is_some() {
                    self.world.tally.count("renewals");
                }
                if message.connection_id.as_deref() != Some(&session.connection_id) {
                    self.fail_with(
                        "renewal failed",
                        1,
                        "CONNECTED for AUTH changed the connection id",
                    );
                }
            }
            Some(Action::Auth) => {
                if !self.plan.renewable {
                    self.world
                        .tally
                        .count("AUTH for a token shorter than the lead");
                }
                if session.token_fetch.is_none() {
                    session.auth_asked = Some(Instant::now());
                    session.token_fetch = Some(self.token_fetch());
                }
            }
            Some(Action::Nack) => {
                self.fail_with(
                    "presence refused",
                    message.count.unwrap_or(1),
                    describe(&message),
                );
            }
            Some(Action::Detached) => {
                self.fail_with("channel detached by the server", 1, describe(&message));
            }
            Some(Action::Error) if message.channel.is_some() => {
                if let Some(i) = channel {
                    session.attaching[i] = None;
                }
                self.fail_with("channel error", 1, describe(&message));
            }
            Some(Action::Disconnected) => {
                let code = message.error.as_ref().map_or(0, |e| e.code);
                if code == 40142 {
                    self.token = None;
                    if self.plan.renewable {
                        self.fail_with(
                            "token expired though it was renewable",
                            1,
                            describe(&message),
                        );
                    } else {
                        self.world.tally.count("token expiries (expected)");
                    }
                    return Some(End::Server);
                }
                return Some(self.server_ended(session, &describe(&message)));
            }
            Some(Action::Error | Action::Closed) => {
                // The connection is over: start afresh rather than resume it.
                let end = self.server_ended(session, &describe(&message));
                self.start_afresh();
                return Some(end);
            }
            _ => {}
        }
        None
    }

    pub(super) fn on_messages(&mut self, channel: Option<usize>, message: ProtocolMessage) {
        let received_us = crate::clock::now_us();
        let n = message.messages.as_ref().map_or(0, Vec::len) as u64;
        self.world
            .latencies
            .delivered
            .fetch_add(n, Ordering::Relaxed);
        let Some(i) = channel else {
            self.fail_with("misrouted", n, "MESSAGE on a channel never attached");
            return;
        };
        let number = self.plan.channels[i].1;
        for m in message.messages.into_iter().flatten() {
            let serial = m.serial.clone().unwrap_or_default();
            match self.orders[i].see(&serial) {
                Seen::InOrder => {}
                Seen::Lost(n) => self.fail_with(
                    "lost",
                    n,
                    format!("{} before {serial} on {}", n, self.plan.channels[i].0),
                ),
                Seen::Duplicated => self.fail_with(
                    "duplicated",
                    1,
                    format!("{serial} on {}", self.plan.channels[i].0),
                ),
                Seen::Reordered => self.fail_with(
                    "reordered",
                    1,
                    format!("{serial} on {}", self.plan.channels[i].0),
                ),
                Seen::NewIncarnation(n) => self.fail_with(
                    "lost",
                    n.max(1),
                    format!(
                        "channel {} began again at {serial}",
                        self.plan.channels[i].0
                    ),
                ),
                Seen::Unreadable => self.fail_with(
                    "misrouted",
                    1,
                    format!("serial {serial:?} on {}", self.plan.channels[i].0),
                ),
            }
            if let Some(sent_us) = sent_us_of(&m.data, m.encoding.as_deref(), number) {
                self.latencies
                    .push((received_us, received_us.saturating_sub(sent_us)));
            } else if m.name.as_deref() == Some("load") {
                self.fail_with(
                    "misrouted",
                    1,
                    format!(
                        "a publication for another channel on {}",
                        self.plan.channels[i].0
                    ),
                );
            }
        }
        if self.latencies.len() >= LATENCY_BATCH {
            self.flush_latencies();
        }
    }

    pub(super) fn flush_latencies(&mut self) {
        self.world.latencies.record(&self.latencies);
        self.latencies.clear();
    }

    /// What this client is still owed, by the newest serials the backend was given.
    pub(super) fn owed(&self) -> u64 {
        self.plan
            .channels
            .iter()
            .zip(&self.orders)
            .filter_map(|((name, _), order)| {
                Some(order.owed_until(&self.world.published.newest(name)?))
            })
            .sum()
    }

    pub(super) fn account_owed(&self) {
        for ((name, _), order) in self.plan.channels.iter().zip(&self.orders) {
            if let Some(newest) = self.world.published.newest(name) {
                let owed = order.owed_until(&newest);
                self.fail_with(
                    "lost",
                    owed,
                    format!("{owed} up to {newest} on {name} never came by the end"),
                );
            }
        }
    }

    /// The server ended the connection: fine if its node is draining, a failure otherwise.
    pub(super) fn server_ended(&self, session: &Session, why: &str) -> End {
        if self.world.nodes.endpoints.is_draining(session.node) {
            self.world.tally.count("drain handovers");
        } else {
            self.fail_with(
                format!("server ended the connection: {}", reason_of(why)),
                1,
                format!("{} on node {}: {why}", session.connection_id, session.node),
            );
        }
        End::Server
    }
}
