//! Read operations: merchant, payment, payment pages and balances. Each checks in
//! the same round trip that the shard still owns the key's range (reads are not
//! fenced by the trigger), so a stale router never answers 404 from a shard that
//! lost the merchant.

use axum::http::StatusCode;
use deadpool_postgres::ClientWrapper;
use rust_decimal::Decimal;
use shardline_core::ids::PaymentId;
use shardline_core::money::Currency;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::ops::{merchant_view, not_found, to_json};
use super::{ExecError, Outcome, PaymentRow, Target, check_owned, ledger, render, sql};
use crate::model::{self, PaymentPage};

type Param<'a> = &'a (dyn ToSql + Sync);

fn read(body: serde_json::Value, rows: u64) -> Outcome {
    Outcome {
        status: StatusCode::OK,
        body,
        replayed: false,
        lsn: None,
        rows,
    }
}

pub(super) async fn get_merchant(c: &ClientWrapper, t: &Target) -> Result<Outcome, ExecError> {
    let own = c.prepare_cached(sql::OWNED).await?;
    let sel = c.prepare_cached(sql::SELECT_MERCHANT).await?;
    let uuid = t.uuid();
    let p3: [Param<'_>; 1] = [&t.key];
    let p4: [Param<'_>; 2] = [&t.key, &uuid];
    let (own, m) = futures_util::join!(c.query_one(&own, &p3), c.query_opt(&sel, &p4));
    check_owned(&own?)?;
    let row = m?.ok_or_else(|| not_found("merchant", "merchant_not_found"))?;
    Ok(read(to_json(&merchant_view(t, &row)?)?, 1))
}

pub(super) async fn get_payment(
    c: &ClientWrapper,
    t: &Target,
    p: &PaymentId,
) -> Result<Outcome, ExecError> {
    let own = c.prepare_cached(sql::OWNED).await?;
    let sel = c.prepare_cached(&sql::select_payment()).await?;
    let (uuid, pid) = (t.uuid(), *p.as_uuid());
    let p5: [Param<'_>; 1] = [&t.key];
    let p6: [Param<'_>; 3] = [&t.key, &uuid, &pid];
    let (own, row) = futures_util::join!(c.query_one(&own, &p5), c.query_opt(&sel, &p6));
    check_owned(&own?)?;
    let row = row?.ok_or_else(|| not_found("payment", "payment_not_found"))?;
    let view = PaymentRow::from_row(&row)?.view(&t.merchant);
    Ok(read(to_json(&view)?, 1))
}

pub(super) async fn list_payments(
    c: &ClientWrapper,
    t: &Target,
    limit: i64,
    after: Option<&PaymentId>,
) -> Result<Outcome, ExecError> {
    let own = c.prepare_cached(sql::OWNED).await?;
    let merchant = c.prepare_cached(sql::SELECT_MERCHANT).await?;
    let list = c.prepare_cached(&sql::list_payments()).await?;
    let uuid = t.uuid();
    let after = after.map_or(Uuid::nil(), |p| *p.as_uuid());
    let fetch = limit + 1;
    let p7: [Param<'_>; 1] = [&t.key];
    let p8: [Param<'_>; 2] = [&t.key, &uuid];
    let p9: [Param<'_>; 4] = [&t.key, &uuid, &after, &fetch];
    let (own, m, rows) = futures_util::join!(
        c.query_one(&own, &p7),
        c.query_opt(&merchant, &p8),
        c.query(&list, &p9)
    );
    check_owned(&own?)?;
    m?.ok_or_else(|| not_found("merchant", "merchant_not_found"))?;
    let rows = rows?;
    let has_more = rows.len() as i64 > limit;
    let data = rows
        .iter()
        .take(usize::try_from(limit).unwrap_or(0))
        .map(|r| PaymentRow::from_row(r).map(|p| p.view(&t.merchant)))
        .collect::<Result<Vec<_>, _>>()?;
    let next_after = if has_more {
        data.last().map(|p| p.id.clone())
    } else {
        None
    };
    let n = data.len() as u64;
    let page = PaymentPage {
        data,
        has_more,
        next_after,
    };
    Ok(read(to_json(&page)?, n))
}

pub(super) async fn balance(c: &ClientWrapper, t: &Target) -> Result<Outcome, ExecError> {
    let own = c.prepare_cached(sql::OWNED).await?;
    let merchant = c.prepare_cached(sql::SELECT_MERCHANT).await?;
    let bal = c.prepare_cached(sql::SELECT_BALANCES).await?;
    let uuid = t.uuid();
    let p10: [Param<'_>; 1] = [&t.key];
    let p11: [Param<'_>; 2] = [&t.key, &uuid];
    let p12: [Param<'_>; 2] = [&t.key, &uuid];
    let (own, m, rows) = futures_util::join!(
        c.query_one(&own, &p10),
        c.query_opt(&merchant, &p11),
        c.query(&bal, &p12)
    );
    check_owned(&own?)?;
    m?.ok_or_else(|| not_found("merchant", "merchant_not_found"))?;
    let rows = rows?;
    let mut out: Vec<(Currency, [Decimal; 3])> = Vec::new();
    for r in &rows {
        let code: String = r.try_get(0)?;
        let account: String = r.try_get(1)?;
        let amount: Decimal = r.try_get(2)?;
        let cur = super::currency_of(&code)?;
        let i = match out.iter().position(|(c, _)| *c == cur) {
            Some(i) => i,
            None => {
                out.push((cur, [Decimal::ZERO; 3]));
                out.len() - 1
            }
        };
        let slot = match account.as_str() {
            ledger::AUTHORIZED => 0,
            ledger::AVAILABLE => 1,
            ledger::REFUNDED => 2,
            _ => continue,
        };
        if let Some((_, sums)) = out.get_mut(i) {
            sums[slot] += amount;
        }
    }
    let body = model::Balance {
        merchant_id: t.merchant.to_string(),
        balances: out
            .into_iter()
            .map(|(cur, [a, v, r])| model::CurrencyBalance {
                currency: cur.code().to_owned(),
                authorized: render(a, cur),
                available: render(v, cur),
                refunded: render(r, cur),
            })
            .collect(),
    };
    Ok(read(to_json(&body)?, rows.len() as u64))
}
