//! What the load generator does: the operation kinds, the per-merchant state that
//! makes each operation valid (capture an authorized payment, refund no more than
//! was captured), and one operation's execution against the router or an edge.

use std::collections::VecDeque;
use std::sync::Mutex;

use rand::Rng;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use shardline_core::{Currency, MerchantId};
use uuid::Uuid;

use crate::http::{Client, HttpError, Reply};
use crate::scenario::Mix;
use crate::verify::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Onboard,
    Authorize,
    Capture,
    Refund,
    Void,
    ReadRouter,
    ReadEdge,
}

impl OpKind {
    pub const ALL: [OpKind; 7] = [
        OpKind::Onboard,
        OpKind::Authorize,
        OpKind::Capture,
        OpKind::Refund,
        OpKind::Void,
        OpKind::ReadRouter,
        OpKind::ReadEdge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Onboard => "onboard",
            OpKind::Authorize => "authorize",
            OpKind::Capture => "capture",
            OpKind::Refund => "refund",
            OpKind::Void => "void",
            OpKind::ReadRouter => "read_router",
            OpKind::ReadEdge => "read_edge",
        }
    }

    pub fn is_write(self) -> bool {
        !matches!(self, OpKind::ReadRouter | OpKind::ReadEdge)
    }
}

/// Weighted choice of the next operation kind.
#[derive(Debug, Clone)]
pub struct OpChooser {
    cumulative: Vec<(u32, OpKind)>,
    total: u32,
}

impl OpChooser {
    pub fn new(mix: &Mix, with_edge: bool) -> Self {
        let weights = [
            (mix.onboard, OpKind::Onboard),
            (mix.authorize, OpKind::Authorize),
            (mix.capture, OpKind::Capture),
            (mix.refund, OpKind::Refund),
            (mix.void, OpKind::Void),
            (mix.read_router, OpKind::ReadRouter),
            // Without an edge, its reads go to the router.
            (if with_edge { mix.read_edge } else { 0 }, OpKind::ReadEdge),
            (
                if with_edge { 0 } else { mix.read_edge },
                OpKind::ReadRouter,
            ),
        ];
        let mut total = 0;
        let mut cumulative = Vec::new();
        for (w, k) in weights {
            if w > 0 {
                total += w;
                cumulative.push((total, k));
            }
        }
        OpChooser { cumulative, total }
    }

    pub fn choose<R: Rng + ?Sized>(&self, rng: &mut R) -> OpKind {
        let x = rng.random_range(0..self.total.max(1));
        self.cumulative
            .iter()
            .find(|(c, _)| x < *c)
            .map_or(OpKind::ReadRouter, |(_, k)| *k)
    }
}

/// A payment the generator may act on next.
#[derive(Debug, Clone)]
pub struct Payment {
    pub id: Uuid,
    pub amount: Decimal,
    pub refunded: Decimal,
    /// The `Shardline-Token` of its last write (for edge reads).
    pub token: Option<String>,
}

/// One merchant's payments by state. A payment is taken out while an operation
/// runs on it, so concurrent operations never race on one payment.
#[derive(Debug)]
pub struct MerchantState {
    pub id: MerchantId,
    pub currency: Currency,
    pub authorized: Mutex<VecDeque<Payment>>,
    pub captured: Mutex<VecDeque<Payment>>,
    /// Done payments, kept (bounded) for reads.
    pub settled: Mutex<VecDeque<Payment>>,
}

const KEEP_SETTLED: usize = 64;

impl MerchantState {
    pub fn new(id: MerchantId, currency: Currency) -> Self {
        MerchantState {
            id,
            currency,
            authorized: Mutex::new(VecDeque::new()),
            captured: Mutex::new(VecDeque::new()),
            settled: Mutex::new(VecDeque::new()),
        }
    }

    fn take(q: &Mutex<VecDeque<Payment>>) -> Option<Payment> {
        q.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    fn put(q: &Mutex<VecDeque<Payment>>, p: Payment) {
        q.lock().unwrap_or_else(|p| p.into_inner()).push_back(p);
    }

    fn settle(&self, p: Payment) {
        let mut s = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        s.push_back(p);
        if s.len() > KEEP_SETTLED {
            s.pop_front();
        }
    }

    /// Any known payment, for a read (not taken out).
    fn any(&self) -> Option<Payment> {
        for q in [&self.captured, &self.settled, &self.authorized] {
            if let Some(p) = q.lock().unwrap_or_else(|p| p.into_inner()).back() {
                return Some(p.clone());
            }
        }
        None
    }
}

/// How one operation ended, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A definite refusal (a 4xx other than the expected ones).
    Failed(String),
    /// The client cannot know whether the write happened (timeout, connection
    /// error, any 5xx).
    Unknown(String),
}

/// The result of an operation: outcome, writes acknowledged, retries compared.
#[derive(Debug, Default)]
pub struct Done {
    pub outcome: Option<Outcome>,
    pub acked: Vec<Write>,
    /// Writes whose outcome is unknown: (idempotency key, path, body).
    pub unknown: Vec<(String, String, Value)>,
    /// The operation actually run (a capture with nothing to capture authorizes).
    pub ran: Option<OpKind>,
    /// A deliberate retry returned something other than the original.
    pub retry_mismatch: Option<String>,
}

fn amount<R: Rng + ?Sized>(rng: &mut R, currency: Currency) -> Decimal {
    // 1.00 .. 500.00 in major units, at the currency's precision.
    let e = currency.exponent();
    let minor_per_major = 10i64.pow(e);
    let minor = rng.random_range(minor_per_major..=500 * minor_per_major);
    Decimal::new(minor, e)
}

fn classify(r: &Result<Reply, HttpError>, ok: &[u16]) -> Outcome {
    match r {
        Ok(rep) if ok.contains(&rep.status.as_u16()) => Outcome::Ok,
        // A 5xx (503 included: a shard that went down mid-commit) leaves the
        // outcome open; writes are settled later by replaying their key.
        Ok(rep) if rep.status.is_server_error() => Outcome::Unknown(format!(
            "http {} {}",
            rep.status.as_u16(),
            rep.body["code"].as_str().unwrap_or("")
        )),
        Ok(rep) => Outcome::Failed(format!(
            "http {} {}",
            rep.status.as_u16(),
            rep.body["code"].as_str().unwrap_or("")
        )),
        Err(HttpError::Timeout { .. }) => Outcome::Unknown("timeout".into()),
        Err(HttpError::Transport { .. }) => Outcome::Unknown("transport".into()),
    }
}

/// The parts of a response a replay must reproduce.
fn essence(r: &Reply) -> (u16, Value) {
    (r.status.as_u16(), r.body.clone())
}

/// Send a write; with probability `retry`, send it again with the same key and
/// check the replay equals the original (when the original was definitive).
async fn write<R: Rng + ?Sized>(
    router: &Client,
    path: &str,
    body: Value,
    retry: f64,
    rng: &mut R,
    done: &mut Done,
    ok: &[u16],
) -> Result<Reply, HttpError> {
    let idem = Uuid::now_v7().to_string();
    let first = router.post(path, Some(&idem), &body).await;
    let again = rng.random_bool(retry);
    match classify(&first, ok) {
        Outcome::Unknown(why) => {
            done.unknown
                .push((idem.clone(), path.to_owned(), body.clone()));
            done.outcome = Some(Outcome::Unknown(why));
        }
        o => done.outcome = Some(o),
    }
    // Only a definitive first answer (not a 5xx, timeout or transport error:
    // those leave the outcome open and store nothing to replay) must be
    // reproduced by the replay.
    let definitive = !matches!(done.outcome, Some(Outcome::Unknown(_)));
    if again
        && definitive
        && let Ok(orig) = &first
    {
        match router.post(path, Some(&idem), &body).await {
            Ok(rep) if essence(&rep) == essence(orig) && rep.replayed => {}
            Ok(rep) if rep.status.as_u16() == 409 => {} // first still in flight
            Ok(rep) => {
                done.retry_mismatch = Some(format!(
                    "{path}: replay {} (replayed {}) differs from {}",
                    rep.status, rep.replayed, orig.status
                ));
            }
            Err(_) => {}
        }
    }
    first
}

/// Run one operation of kind `kind` for merchant `m`.
pub async fn run_op<R: Rng + Send>(
    kind: OpKind,
    m: &MerchantState,
    router: &Client,
    edge: Option<&Client>,
    retry: f64,
    rng: &mut R,
) -> Done {
    let mut done = Done::default();
    let mid = m.id;
    let cur = m.currency;
    let base = format!("/v1/merchants/{mid}/payments");
    // Operations that need a payment in some state fall back to authorizing.
    let (kind, payment) = match kind {
        OpKind::Capture | OpKind::Void => match MerchantState::take(&m.authorized) {
            Some(p) => (kind, Some(p)),
            None => (OpKind::Authorize, None),
        },
        OpKind::Refund => match MerchantState::take(&m.captured) {
            Some(p) => (kind, Some(p)),
            None => (OpKind::Authorize, None),
        },
        OpKind::ReadRouter | OpKind::ReadEdge => match m.any() {
            Some(p) => (kind, Some(p)),
            None => (OpKind::Authorize, None),
        },
        k => (k, None),
    };
    done.ran = Some(kind);
    match (kind, payment) {
        (OpKind::Authorize, _) => {
            let a = amount(rng, cur);
            let body = json!({"amount": a.to_string(), "currency": cur.code()});
            let r = write(router, &base, body, retry, rng, &mut done, &[201]).await;
            if let (Some(Outcome::Ok), Ok(rep)) = (&done.outcome, &r)
                && let Some(id) = rep.body["id"].as_str().and_then(|s| s.parse().ok())
            {
                done.acked.push(Write::Payment {
                    merchant: mid,
                    payment: id,
                });
                MerchantState::put(
                    &m.authorized,
                    Payment {
                        id,
                        amount: a,
                        refunded: Decimal::ZERO,
                        token: rep.token.clone(),
                    },
                );
            }
        }
        (OpKind::Capture, Some(mut p)) => {
            let path = format!("{base}/{}/capture", p.id);
            let r = write(router, &path, json!({}), retry, rng, &mut done, &[200]).await;
            if let Ok(rep) = &r {
                p.token = rep.token.clone().or(p.token);
            }
            match done.outcome {
                Some(Outcome::Ok) => MerchantState::put(&m.captured, p),
                _ => m.settle(p),
            }
        }
        (OpKind::Void, Some(mut p)) => {
            let path = format!("{base}/{}/void", p.id);
            let r = write(router, &path, json!({}), retry, rng, &mut done, &[200]).await;
            if let Ok(rep) = &r {
                p.token = rep.token.clone().or(p.token);
            }
            m.settle(p);
        }
        (OpKind::Refund, Some(mut p)) => {
            let left = p.amount - p.refunded;
            let a = (amount(rng, cur) / Decimal::from(4))
                .round_dp(cur.exponent())
                .min(left)
                .max(Decimal::new(1, cur.exponent()));
            let path = format!("{base}/{}/refunds", p.id);
            let body = json!({"amount": a.to_string()});
            let r = write(router, &path, body, retry, rng, &mut done, &[201]).await;
            if let (Some(Outcome::Ok), Ok(rep)) = (&done.outcome, &r) {
                p.refunded += a;
                p.token = rep.token.clone().or(p.token);
                if let Some(id) = rep.body["id"].as_str().and_then(|s| s.parse().ok()) {
                    done.acked.push(Write::Refund {
                        merchant: mid,
                        payment: p.id,
                        refund: id,
                    });
                }
            }
            if p.refunded < p.amount && done.outcome == Some(Outcome::Ok) {
                MerchantState::put(&m.captured, p);
            } else {
                m.settle(p);
            }
        }
        (OpKind::ReadRouter, Some(p)) => {
            let r = router.get(&format!("{base}/{}", p.id)).await;
            done.outcome = Some(classify(&r, &[200]));
        }
        (OpKind::ReadEdge, Some(p)) => {
            let Some(edge) = edge else {
                done.outcome = Some(Outcome::Failed("no edge".into()));
                return done;
            };
            let path = format!("{base}/{}", p.id);
            let r = match &p.token {
                Some(t) => edge.get_with(&path, &[("shardline-min-token", t)]).await,
                None => edge.get(&path).await,
            };
            done.outcome = Some(classify(&r, &[200]));
        }
        (OpKind::Onboard, _) => {
            let body = json!({"name": "loadtest merchant", "default_currency": cur.code()});
            let r = write(router, "/v1/merchants", body, 0.0, rng, &mut done, &[201]).await;
            if let (Some(Outcome::Ok), Ok(rep)) = (&done.outcome, &r)
                && let Some(id) = rep.body["id"].as_str().and_then(|s| s.parse().ok())
            {
                done.acked.push(Write::Merchant { merchant: id });
            }
        }
        (k, None) => {
            // Unreachable by construction (payment-needing kinds fell back above).
            done.outcome = Some(Outcome::Failed(format!("{} without a payment", k.name())));
        }
    }
    done
}
