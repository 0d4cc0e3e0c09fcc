//! What an attachment gets of its channel's messages, and how: a filter
//! (`[filter=<expr>]channel`) keeps the messages it matches, evaluated once per distinct filter
//! per message, and `delta=vcdiff` sends a payload as a VCDIFF patch against the previous
//! message's, made once per view and fan-out, never per subscriber.
//!
//! A patch only goes to an attachment whose last message was the one it patches. Per view
//! (filter), the channel keeps its last message's id and payload with a number (`Chain`); each
//! delta attachment keeps the number of the last message it got (`DeltaCursor`). Anything that
//! breaks the run (a fresh attach, a replay that does not end at the chain's message, a message
//! it was not sent) leaves the numbers apart, so its next message goes whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use protocol::filter::Filter;
use protocol::{Data, Message};

/// An attachment's view: its filter, and where it is in its view's delta chain.
#[derive(Default)]
pub struct View {
    pub filter: Option<Arc<Filter>>,
    /// `delta=vcdiff`.
    pub delta: Option<DeltaCursor>,
}

impl View {
    pub(super) fn is_plain(&self) -> bool {
        self.filter.is_none() && self.delta.is_none()
    }

    fn chain_key(&self) -> Option<&str> {
        self.filter.as_deref().map(Filter::source)
    }

    pub(super) fn wants(&self, message: &Message) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| filter.matches(message))
    }
}

/// The number of the last chain message an attachment got (0: none, its next goes whole).
#[derive(Default)]
pub struct DeltaCursor(AtomicU64);

impl DeltaCursor {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, seq: u64) {
        self.0.store(seq, Ordering::Relaxed);
    }
}

/// Views of one channel that keep a delta chain (a payload each, up to the message size limit):
/// attachments with as many distinct filters cannot make a channel hold more.
const MAX_CHAINS_PER_CHANNEL: usize = 64;

/// Per view with delta attachments, the last message sent in it.
#[derive(Default)]
pub(super) struct Chains {
    next_seq: u64,
    by_view: HashMap<Option<Box<str>>, Chain>,
}

struct Chain {
    seq: u64,
    link: Link,
}

/// Where a run of messages stands for the next patch: its last message's id (as the client
/// knows it) and payload.
#[derive(Default)]
struct Link {
    id: Option<Arc<str>>,
    base: Option<Base>,
}

impl Link {
    /// `message`, known to the client as `id`, as a patch against the message before it, where
    /// one is worth sending; the run moves on to it either way.
    fn follow(&mut self, message: &Message, id: Option<Arc<str>>) -> Option<Message> {
        let target = base_of(message);
        let patch = match (&target, &self.base, &self.id) {
            (Some(target), Some(source), Some(from)) => {
                patched(message, target, source, from).map(|mut patch| {
                    patch.id = id.as_deref().map(str::to_owned);
                    patch
                })
            }
            _ => None,
        };
        *self = Link { id, base: target };
        patch
    }
}

impl Chains {
    /// No delta attachment is left: nothing to keep.
    pub(super) fn clear(&mut self) {
        self.by_view = HashMap::new();
    }
}

/// A payload as the client keeps it to patch the next one (ably-js `baseEncodedPreviousPayload`):
/// its bytes (base64 undone), the encoding steps left to undo after the patch, and whether the
/// bytes are text (the patched bytes must be turned back into a string).
#[derive(Clone)]
struct Base {
    bytes: Bytes,
    encoding: Option<String>,
    text: bool,
}

/// A message's payload as a delta base, when it can be one: a new message (not an update,
/// delete, append or summary) with a string or binary payload.
fn base_of(message: &Message) -> Option<Base> {
    if message.action.is_some_and(|action| action != 0) {
        return None;
    }
    let encoding = message.encoding.as_deref().filter(|e| !e.is_empty());
    if encoding.is_some_and(|e| e.split('/').any(|step| step == "vcdiff")) {
        return None;
    }
    match message.data.as_ref()? {
        Data::String(text) => match encoding.and_then(|e| e.strip_suffix("base64")) {
            Some(rest) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?;
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                Some(Base {
                    bytes: bytes.into(),
                    encoding: (!rest.is_empty()).then(|| rest.to_owned()),
                    text: false,
                })
            }
            None => Some(Base {
                bytes: Bytes::copy_from_slice(text.as_bytes()),
                encoding: encoding.map(str::to_owned),
                text: true,
            }),
        },
        Data::Binary(bytes) => Some(Base {
            bytes: bytes.clone(),
            encoding: encoding.map(str::to_owned),
            text: false,
        }),
        Data::Other(_) => None,
    }
}

/// `message` as a patch against `source` (the message `from`), if that is smaller than its
/// payload.
fn patched(message: &Message, target: &Base, source: &Base, from: &str) -> Option<Message> {
    let delta = vcdiff::encode(&source.bytes, &target.bytes);
    if delta.len() >= target.bytes.len() {
        return None;
    }
    let mut extras = match &message.extras {
        None => serde_json::Map::new(),
        Some(serde_json::Value::Object(extras)) => extras.clone(),
        Some(_) => return None,
    };
    extras.insert(
        "delta".to_owned(),
        serde_json::json!({ "from": from, "format": "vcdiff" }),
    );
    let mut steps: Vec<&str> = target.encoding.iter().map(String::as_str).collect();
    if target.text {
        steps.push("utf-8");
    }
    steps.push("vcdiff");
    Some(Message {
        data: Some(Data::Binary(delta.into())),
        encoding: Some(steps.join("/")),
        extras: Some(serde_json::Value::Object(extras)),
        ..message.clone()
    })
}

/// One view's share of a fan-out: which messages it keeps and, with delta attachments, their
/// patched forms.
pub(super) struct ViewShare {
    /// Indices into the fan-out's messages.
    selected: Vec<usize>,
    deltas: Option<Deltas>,
}

struct Deltas {
    /// The chain number an attachment must hold for the first message to go patched.
    before: u64,
    /// The number attachments hold once sent this share.
    after: u64,
    /// The patched form of each selected message, where one is worth sending.
    patched: Vec<Option<Message>>,
}

/// What one subscriber is sent of a fan-out's messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) enum Form {
    /// Every selected message whole.
    Whole,
    /// Patched where worth it, the first against the chain's message.
    Patched,
    /// The first whole (the run was broken), the rest patched where worth it.
    Restarted,
}

/// The views of one fan-out, each worked out when its first subscriber comes up.
pub(super) struct FanOutViews {
    /// The fan-out's messages (lent back to the frame for attachments that get them all).
    pub(super) messages: Vec<Message>,
    /// The frame's id, from which messages without one take `<id>:<index>`.
    frame_id: Option<String>,
    /// `[meta]` events (occupancy) go to some attachments only: they move no chain, and an
    /// attachment sent one has it as its client's last message, so its next goes whole.
    off_chain: bool,
    shares: Vec<ViewShare>,
    /// Positions in `shares` (unpatched, patched) of the unfiltered view and per filter text:
    /// one lookup per subscriber, however many distinct filters the attachments use.
    unfiltered: [Option<usize>; 2],
    by_filter: HashMap<Box<str>, [Option<usize>; 2]>,
}

impl FanOutViews {
    pub(super) fn new(messages: Vec<Message>, frame_id: Option<String>) -> FanOutViews {
        let off_chain = messages.iter().all(|m| {
            m.name
                .as_deref()
                .is_some_and(|name| name.starts_with("[meta]"))
        });
        FanOutViews {
            messages,
            frame_id,
            off_chain,
            shares: Vec::new(),
            unfiltered: [None; 2],
            by_filter: HashMap::new(),
        }
    }

    fn id_of(&self, index: usize) -> Option<String> {
        match (&self.messages[index].id, &self.frame_id) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(frame)) => Some(format!("{frame}:{index}")),
            (None, None) => None,
        }
    }

    /// The share of `view`, and the form this subscriber gets it in (None: nothing of it),
    /// advancing its cursor. Views with one filter share one selection and one chain, whatever
    /// name their attachments used.
    pub(super) fn share_for(&mut self, view: &View, chains: &mut Chains) -> Option<(usize, Form)> {
        let patched = usize::from(view.delta.is_some() && !self.off_chain);
        let known = match view.chain_key() {
            None => self.unfiltered[patched],
            Some(filter) => self.by_filter.get(filter).and_then(|slots| slots[patched]),
        };
        let index = match known {
            Some(index) => index,
            None => {
                let share = self.make_share(view, chains);
                self.shares.push(share);
                let index = self.shares.len() - 1;
                match view.chain_key() {
                    None => self.unfiltered[patched] = Some(index),
                    Some(filter) => {
                        self.by_filter.entry(filter.into()).or_default()[patched] = Some(index);
                    }
                }
                index
            }
        };
        let share = &self.shares[index];
        if share.selected.is_empty() {
            return None;
        }
        if let (true, Some(cursor)) = (self.off_chain, &view.delta) {
            cursor.set(0);
        }
        let form = match (&view.delta, &share.deltas) {
            (Some(cursor), Some(deltas)) => {
                let form = if deltas.before != 0 && cursor.get() == deltas.before {
                    Form::Patched
                } else {
                    Form::Restarted
                };
                cursor.set(deltas.after);
                form
            }
            _ => Form::Whole,
        };
        Some((index, form))
    }

    fn make_share(&self, view: &View, chains: &mut Chains) -> ViewShare {
        let selected: Vec<usize> = (0..self.messages.len())
            .filter(|&i| view.wants(&self.messages[i]))
            .collect();
        let deltas = view.delta.as_ref().filter(|_| !self.off_chain).map(|_| {
            let key = view.chain_key().map(Box::from);
            let chain = chains.by_view.remove(&key);
            let before = chain.as_ref().map_or(0, |chain| chain.seq);
            // Past the cap a new view keeps no chain: its attachments get whole messages.
            let room = chain.is_some() || chains.by_view.len() < MAX_CHAINS_PER_CHANNEL;
            let mut link = chain.map(|chain| chain.link).unwrap_or_default();
            let patches: Vec<Option<Message>> = selected
                .iter()
                .map(|&i| link.follow(&self.messages[i], self.id_of(i).map(Arc::from)))
                .collect();
            let after = if selected.is_empty() {
                before
            } else if room {
                chains.next_seq += 1;
                chains.next_seq
            } else {
                0
            };
            if after != 0 {
                chains.by_view.insert(key, Chain { seq: after, link });
            }
            Deltas {
                before,
                after,
                patched: patches,
            }
        });
        ViewShare { selected, deltas }
    }

    /// The messages of share `index` in `form`: ids made explicit (a frame of a subset cannot
    /// give them by index).
    pub(super) fn messages(&self, index: usize, form: Form) -> Vec<Message> {
        let share = &self.shares[index];
        share
            .selected
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let patch = match (&share.deltas, form) {
                    (Some(deltas), Form::Patched) => deltas.patched[k].as_ref(),
                    (Some(deltas), Form::Restarted) if k > 0 => deltas.patched[k].as_ref(),
                    _ => None,
                };
                match patch {
                    Some(patch) => patch.clone(),
                    None => {
                        let mut message = self.messages[i].clone();
                        if message.id.is_none() {
                            message.id = self.id_of(i);
                        }
                        message
                    }
                }
            })
            .collect()
    }

    /// How many messages share `index` holds.
    pub(super) fn selected(&self, index: usize) -> usize {
        self.shares[index].selected.len()
    }

    /// Whether the share's frames are all the messages as they are (the frame can go as is).
    pub(super) fn is_everything(&self, index: usize, form: Form) -> bool {
        let share = &self.shares[index];
        share.selected.len() == self.messages.len()
            && (form == Form::Whole
                || share.deltas.as_ref().is_none_or(|deltas| {
                    deltas
                        .patched
                        .iter()
                        .enumerate()
                        .all(|(k, p)| p.is_none() || (k == 0 && form == Form::Restarted))
                }))
    }
}

/// A replay for one attachment (resume or rewind): its filter applied and, with deltas, each
/// message after the first patched against the one before. A replay runs to the channel's
/// newest message, so its last one is where the view's chain stands: the attachment joins the
/// chain there (made anew if it had lapsed with its last delta attachment).
pub(super) fn replay(messages: Vec<Message>, view: &View, chains: &mut Chains) -> Vec<Message> {
    let mut kept: Vec<Message> = messages.into_iter().filter(|m| view.wants(m)).collect();
    let Some(cursor) = &view.delta else {
        return kept;
    };
    // A fresh run: the first message goes whole.
    let mut link = Link::default();
    for message in kept.iter_mut() {
        let id = message.id.as_deref().map(Arc::from);
        if let Some(patch) = link.follow(message, id) {
            *message = patch;
        }
    }
    let Some(last) = link.id.clone() else {
        cursor.set(0);
        return kept;
    };
    let key = view.chain_key().map(Box::from);
    let joined = chains
        .by_view
        .get(&key)
        .filter(|chain| chain.link.id.as_deref() == Some(&*last))
        .map(|chain| chain.seq);
    if joined.is_none()
        && chains.by_view.len() >= MAX_CHAINS_PER_CHANNEL
        && !chains.by_view.contains_key(&key)
    {
        cursor.set(0);
        return kept;
    }
    let seq = joined.unwrap_or_else(|| {
        chains.next_seq += 1;
        let seq = chains.next_seq;
        chains.by_view.insert(key, Chain { seq, link });
        seq
    });
    cursor.set(seq);
    kept
}
