//! The verifier: after a run, compares three independent records — the
//! server's database, the payment provider's ledger and every printer's
//! fiscal journal — plus what the client was told, and lists every
//! disagreement: payments lost, charged but never fiscalized, fiscalized
//! twice, refunded without a reversal receipt, totals that disagree.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::provider::Operation;
use crate::run::FlowRecord;

/// Where the verifier reads its records.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The server database (PostgreSQL or SQLite URL).
    #[arg(long, env = "DATABASE_URL")]
    pub(crate) database_url: String,
    /// The provider's ledger: an `http://…/ledger` URL or a JSON file.
    #[arg(long)]
    pub(crate) ledger: String,
    /// Read simulated printers' journals through this server's
    /// `GET /v1/printers/{id}/simulator/journal` (the embedded shape).
    #[arg(long)]
    pub(crate) journals_api: Option<String>,
    /// Operator key for `--journals-api`.
    #[arg(long, default_value = "ok_demo_operator")]
    pub(crate) operator_key: String,
    /// Printer journals as JSON files (`{printer: [entries]}`).
    #[arg(long)]
    pub(crate) journal_file: Vec<PathBuf>,
    /// The agents' own databases (`agent_journal`), when the devices'
    /// journals cannot be read: a weaker, server-side record.
    #[arg(long)]
    pub(crate) agent_journal: Vec<String>,
    /// The load generator's `flows.jsonl`: what the client was told.
    #[arg(long)]
    pub(crate) flows: Option<PathBuf>,
    /// Do not count parked sagas (they wait for an operator) as failures.
    #[arg(long)]
    pub(crate) allow_parked: bool,
    /// Write the findings as JSON here.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

/// A fiscal document as the server records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Doc {
    pub(crate) printer: String,
    pub(crate) number: u64,
    pub(crate) amount: i64,
}

/// A payment row of the server database.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DbPayment {
    pub(crate) id: String,
    pub(crate) restaurant: String,
    pub(crate) amount: i64,
    pub(crate) status: String,
    pub(crate) receipt: Option<Doc>,
}

/// A refund row of the server database.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DbRefund {
    pub(crate) id: String,
    pub(crate) payment: String,
    pub(crate) restaurant: String,
    pub(crate) amount: i64,
    pub(crate) status: String,
    pub(crate) reversal: Option<Doc>,
}

/// One document in a printer's fiscal journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JournalEntry {
    pub(crate) number: u64,
    /// `receipt`, `reversal`, `x_report`, `z_report`, `cash`.
    pub(crate) kind: String,
    pub(crate) sale_key: Option<String>,
    pub(crate) amount: i64,
}

/// Everything the verifier compares.
#[derive(Debug, Default)]
pub(crate) struct Records {
    pub(crate) payments: Vec<DbPayment>,
    pub(crate) refunds: Vec<DbRefund>,
    pub(crate) ledger: Vec<Operation>,
    /// Journal entries by printer id.
    pub(crate) journals: BTreeMap<String, Vec<JournalEntry>>,
    /// Journals come from devices (true) or from the agents' databases.
    pub(crate) device_journals: bool,
    pub(crate) flows: Vec<FlowRecord>,
}

/// One disagreement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    pub(crate) kind: &'static str,
    pub(crate) subject: String,
    pub(crate) detail: String,
}

/// The verifier's answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Verdict {
    pub(crate) payments: usize,
    pub(crate) refunds: usize,
    pub(crate) ledger_operations: usize,
    pub(crate) journal_documents: usize,
    pub(crate) printers: usize,
    pub(crate) fiscalized: usize,
    pub(crate) reversed: usize,
    /// Count per kind of finding.
    pub(crate) counts: BTreeMap<&'static str, usize>,
    pub(crate) findings: Vec<Finding>,
}

impl Verdict {
    pub(crate) fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    pub(crate) fn print(&self) {
        println!(
            "verify: {} payments ({} fiscalized), {} refunds ({} reversed), {} provider operations, {} fiscal documents on {} printers",
            self.payments,
            self.fiscalized,
            self.refunds,
            self.reversed,
            self.ledger_operations,
            self.journal_documents,
            self.printers
        );
        if self.ok() {
            println!(
                "verify: OK — no payment lost, none charged without a receipt, none fiscalized twice, every refund reversed, totals agree"
            );
            return;
        }
        for (k, n) in &self.counts {
            println!("verify: {n} × {k}");
        }
        for f in self.findings.iter().take(50) {
            println!("  {}: {} — {}", f.kind, f.subject, f.detail);
        }
        if self.findings.len() > 50 {
            println!("  … {} more", self.findings.len() - 50);
        }
    }
}

const FINAL_PAYMENT: [&str; 4] = ["fiscalized", "declined", "voided", "parked"];
const FINAL_REFUND: [&str; 3] = ["reversed", "rejected", "parked"];

/// `{id}/receipt`, `{id}/reversal.2` → `id`.
fn owner(sale_key: &str) -> &str {
    sale_key.split_once('/').map_or(sale_key, |(id, _)| id)
}

/// Compares the records.
pub(crate) fn check(r: &Records, allow_parked: bool) -> Verdict {
    let mut findings = Vec::new();
    let mut add = |kind: &'static str, subject: &str, detail: String| {
        findings.push(Finding {
            kind,
            subject: subject.to_owned(),
            detail,
        });
    };
    let payments: HashMap<&str, &DbPayment> =
        r.payments.iter().map(|p| (p.id.as_str(), p)).collect();
    let refunds: HashMap<&str, &DbRefund> = r.refunds.iter().map(|x| (x.id.as_str(), x)).collect();

    // What the client was told.
    for f in &r.flows {
        if let Some(id) = &f.payment
            && !payments.contains_key(id.as_str())
        {
            add(
                "payment_lost",
                id,
                format!(
                    "accepted for key {} but not in the database",
                    f.idempotency_key
                ),
            );
        }
        if let Some(id) = &f.refund
            && !refunds.contains_key(id.as_str())
        {
            add("refund_lost", id, "accepted but not in the database".into());
        }
    }

    // Provider ledger, by merchant reference.
    let mut captures: HashMap<&str, Vec<&Operation>> = HashMap::new();
    let mut auths: HashMap<&str, Vec<&Operation>> = HashMap::new();
    let mut settled: HashSet<&str> = HashSet::new();
    let mut refunded: HashMap<&str, Vec<&Operation>> = HashMap::new();
    for op in r.ledger.iter().filter(|o| o.approved()) {
        match op.kind.as_str() {
            "capture" => captures.entry(op.reference.as_str()).or_default().push(op),
            "authorize" => auths.entry(op.reference.as_str()).or_default().push(op),
            "refund" => refunded.entry(op.reference.as_str()).or_default().push(op),
            _ => {}
        }
        if matches!(op.kind.as_str(), "capture" | "void")
            && let Some(p) = &op.parent
        {
            settled.insert(p.as_str());
        }
    }

    // Journals, by payment or refund id.
    let mut receipts: HashMap<&str, Vec<(&str, &JournalEntry)>> = HashMap::new();
    let mut reversals: HashMap<&str, Vec<(&str, &JournalEntry)>> = HashMap::new();
    let mut documents = 0;
    for (printer, entries) in &r.journals {
        documents += entries.len();
        let mut since_z = 0_i64;
        for e in entries {
            match (e.kind.as_str(), e.sale_key.as_deref()) {
                ("receipt", Some(k)) => {
                    receipts.entry(owner(k)).or_default().push((printer, e));
                    since_z += e.amount;
                }
                ("reversal", Some(k)) => {
                    reversals.entry(owner(k)).or_default().push((printer, e));
                    since_z += e.amount;
                }
                ("z_report", _) if r.device_journals => {
                    if e.amount != since_z {
                        add(
                            "z_report_total",
                            printer,
                            format!(
                                "Z report {} shows {} but the receipts since the last Z add up to {since_z}",
                                e.number, e.amount
                            ),
                        );
                    }
                    since_z = 0;
                }
                _ => {}
            }
        }
    }

    let mut net: BTreeMap<&str, [i64; 3]> = BTreeMap::new();
    let mut fiscalized = 0;
    for p in &r.payments {
        let caps = captures.get(p.id.as_str()).map_or(&[][..], Vec::as_slice);
        let recs = receipts.get(p.id.as_str()).map_or(&[][..], Vec::as_slice);
        let totals = net.entry(p.restaurant.as_str()).or_default();
        totals[0] += caps.iter().map(|o| o.amount).sum::<i64>();
        totals[1] += recs.iter().map(|(_, e)| e.amount).sum::<i64>();
        if p.status == "fiscalized" {
            totals[2] += p.amount;
            fiscalized += 1;
        }
        if !FINAL_PAYMENT.contains(&p.status.as_str()) {
            add(
                "payment_not_finished",
                &p.id,
                format!("still `{}` after the run drained", p.status),
            );
        }
        if p.status == "parked" && !allow_parked {
            add("payment_parked", &p.id, "parked for an operator".into());
        }
        if caps.len() > 1 {
            add(
                "charged_twice",
                &p.id,
                format!("{} approved captures", caps.len()),
            );
        }
        if recs.len() > 1 {
            let docs: Vec<String> = recs
                .iter()
                .map(|(pr, e)| format!("{pr}#{}", e.number))
                .collect();
            add(
                "fiscalized_twice",
                &p.id,
                format!("receipts {}", docs.join(", ")),
            );
        }
        match (caps.first(), recs.first()) {
            (Some(c), None) => add(
                "charged_not_fiscalized",
                &p.id,
                format!("captured {} ({}) but no fiscal receipt", c.amount, c.id),
            ),
            (None, Some((pr, e))) => add(
                "fiscalized_without_charge",
                &p.id,
                format!("receipt {pr}#{} without an approved capture", e.number),
            ),
            (Some(c), Some((pr, e))) if c.amount != e.amount || c.amount != p.amount => add(
                "amount_mismatch",
                &p.id,
                format!(
                    "payment {} captured {} receipt {pr}#{} {}",
                    p.amount, c.amount, e.number, e.amount
                ),
            ),
            _ => {}
        }
        if p.status == "fiscalized" {
            match (&p.receipt, recs.first()) {
                (Some(d), Some((pr, e))) if d.printer != *pr || d.number != e.number => add(
                    "database_disagrees",
                    &p.id,
                    format!(
                        "database says {}#{}, printer journal {pr}#{}",
                        d.printer, d.number, e.number
                    ),
                ),
                (_, None) => add(
                    "database_disagrees",
                    &p.id,
                    "fiscalized in the database, no receipt in any journal".into(),
                ),
                (None, _) => add(
                    "database_disagrees",
                    &p.id,
                    "fiscalized without a receipt reference".into(),
                ),
                _ => {}
            }
        } else if !recs.is_empty() && FINAL_PAYMENT.contains(&p.status.as_str()) {
            add(
                "database_disagrees",
                &p.id,
                format!("`{}` in the database but a receipt was printed", p.status),
            );
        }
        if FINAL_PAYMENT.contains(&p.status.as_str()) {
            for a in auths.get(p.id.as_str()).into_iter().flatten() {
                if !settled.contains(a.id.as_str()) {
                    add(
                        "authorization_never_settled",
                        &p.id,
                        format!("authorization {} neither captured nor voided", a.id),
                    );
                }
            }
        }
    }

    let mut reversed = 0;
    for x in &r.refunds {
        let refs = refunded.get(x.id.as_str()).map_or(&[][..], Vec::as_slice);
        let revs = reversals.get(x.id.as_str()).map_or(&[][..], Vec::as_slice);
        let totals = net.entry(x.restaurant.as_str()).or_default();
        totals[0] -= refs.iter().map(|o| o.amount).sum::<i64>();
        totals[1] += revs.iter().map(|(_, e)| e.amount).sum::<i64>();
        if x.status == "reversed" {
            totals[2] -= x.amount;
            reversed += 1;
        }
        if !FINAL_REFUND.contains(&x.status.as_str()) {
            add(
                "refund_not_finished",
                &x.id,
                format!("still `{}` after the run drained", x.status),
            );
        }
        if x.status == "parked" && !allow_parked {
            add("refund_parked", &x.id, "parked for an operator".into());
        }
        if refs.len() > 1 {
            add(
                "refunded_twice",
                &x.id,
                format!("{} approved refunds", refs.len()),
            );
        }
        if revs.len() > 1 {
            add(
                "reversed_twice",
                &x.id,
                format!("{} reversal receipts", revs.len()),
            );
        }
        match (refs.first(), revs.first()) {
            (Some(o), None) => add(
                "refunded_without_reversal",
                &x.id,
                format!(
                    "refunded {} ({}) at the provider, no reversal receipt",
                    o.amount, o.id
                ),
            ),
            (None, Some((pr, e))) => add(
                "reversal_without_refund",
                &x.id,
                format!("reversal {pr}#{} without an approved refund", e.number),
            ),
            (Some(o), Some((pr, e))) if o.amount != -e.amount || o.amount != x.amount => add(
                "amount_mismatch",
                &x.id,
                format!(
                    "refund {} at the provider {} reversal {pr}#{} {}",
                    x.amount, o.amount, e.number, e.amount
                ),
            ),
            _ => {}
        }
        if x.status == "reversed" && revs.is_empty() {
            add(
                "database_disagrees",
                &x.id,
                "reversed in the database, no reversal in any journal".into(),
            );
        }
    }

    // Documents nobody in the database owns.
    for (id, recs) in &receipts {
        if !payments.contains_key(id) {
            add(
                "receipt_without_payment",
                id,
                format!("{} receipt(s) for an unknown payment", recs.len()),
            );
        }
    }
    for (id, revs) in &reversals {
        if !refunds.contains_key(id) {
            add(
                "reversal_without_refund",
                id,
                format!("{} reversal(s) for an unknown refund", revs.len()),
            );
        }
    }
    for (id, caps) in &captures {
        if !payments.contains_key(id) {
            add(
                "charge_without_payment",
                id,
                format!("{} capture(s) for an unknown payment", caps.len()),
            );
        }
    }

    for (restaurant, [ledger, journal, db]) in &net {
        if ledger != journal || journal != db {
            add(
                "totals_disagree",
                restaurant,
                format!("provider net {ledger}, printers net {journal}, database net {db}"),
            );
        }
    }

    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.kind).or_insert(0) += 1;
    }
    Verdict {
        payments: r.payments.len(),
        refunds: r.refunds.len(),
        ledger_operations: r.ledger.len(),
        journal_documents: documents,
        printers: r.journals.len(),
        fiscalized,
        reversed,
        counts,
        findings,
    }
}

fn doc(text: Option<String>) -> Option<Doc> {
    serde_json::from_str(&text?).ok()
}

macro_rules! load_db {
    ($pool:expr) => {{
        let pool = $pool;
        let rows =
            sqlx::query("SELECT id, restaurant_id, amount, status, receipt FROM app_payments")
                .fetch_all(&pool)
                .await
                .map_err(|e| format!("read app_payments: {e}"))?;
        let mut payments = Vec::new();
        for row in rows {
            payments.push(DbPayment {
                id: row.try_get("id").map_err(|e| e.to_string())?,
                restaurant: row.try_get("restaurant_id").map_err(|e| e.to_string())?,
                amount: row.try_get("amount").map_err(|e| e.to_string())?,
                status: row.try_get("status").map_err(|e| e.to_string())?,
                receipt: doc(row.try_get("receipt").map_err(|e| e.to_string())?),
            });
        }
        let rows = sqlx::query(
            "SELECT id, payment_id, restaurant_id, amount, status, reversal FROM app_refunds",
        )
        .fetch_all(&pool)
        .await
        .map_err(|e| format!("read app_refunds: {e}"))?;
        let mut refunds = Vec::new();
        for row in rows {
            refunds.push(DbRefund {
                id: row.try_get("id").map_err(|e| e.to_string())?,
                payment: row.try_get("payment_id").map_err(|e| e.to_string())?,
                restaurant: row.try_get("restaurant_id").map_err(|e| e.to_string())?,
                amount: row.try_get("amount").map_err(|e| e.to_string())?,
                status: row.try_get("status").map_err(|e| e.to_string())?,
                reversal: doc(row.try_get("reversal").map_err(|e| e.to_string())?),
            });
        }
        pool.close().await;
        (payments, refunds)
    }};
}

/// Reads payments and refunds from the server database.
pub(crate) async fn load_database(url: &str) -> Result<(Vec<DbPayment>, Vec<DbRefund>), String> {
    if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .map_err(|e| format!("connect to the server database: {e}"))?;
        Ok(load_db!(pool))
    } else {
        let opts: sqlx::sqlite::SqliteConnectOptions = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .map_err(|e| format!("server database URL: {e}"))?
            .read_only(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(|e| format!("open the server database: {e}"))?;
        Ok(load_db!(pool))
    }
}

/// Reads the printed documents an agent recorded in its own database.
pub(crate) async fn load_agent_journal(url: &str) -> Result<Vec<(String, JournalEntry)>, String> {
    let opts = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .map_err(|e| format!("agent database URL: {e}"))?
        .read_only(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| format!("open the agent database: {e}"))?;
    let rows = sqlx::query("SELECT sale_key, printer_id, kind, outcome FROM agent_journal")
        .fetch_all(&pool)
        .await
        .map_err(|e| format!("read agent_journal: {e}"))?;
    let mut out = Vec::new();
    for row in rows {
        let key: String = row.try_get("sale_key").map_err(|e| e.to_string())?;
        let printer: String = row.try_get("printer_id").map_err(|e| e.to_string())?;
        let kind: String = row.try_get("kind").map_err(|e| e.to_string())?;
        let outcome: Option<String> = row.try_get("outcome").map_err(|e| e.to_string())?;
        let Some(v) = outcome.and_then(|o| serde_json::from_str::<Value>(&o).ok()) else {
            continue;
        };
        if v.get("result").and_then(Value::as_str) != Some("printed") {
            continue;
        }
        let Some(d) = v
            .get("document")
            .and_then(|d| serde_json::from_value::<Doc>(d.clone()).ok())
        else {
            continue;
        };
        out.push((
            printer,
            JournalEntry {
                number: d.number,
                kind,
                sale_key: Some(key),
                amount: d.amount,
            },
        ));
    }
    pool.close().await;
    Ok(out)
}

/// Reads the provider ledger from a URL or a file.
pub(crate) async fn load_ledger(src: &str) -> Result<Vec<Operation>, String> {
    let text = if src.starts_with("http://") || src.starts_with("https://") {
        reqwest::get(src)
            .await
            .map_err(|e| format!("GET {src}: {e}"))?
            .text()
            .await
            .map_err(|e| format!("GET {src}: {e}"))?
    } else {
        std::fs::read_to_string(src).map_err(|e| format!("{src}: {e}"))?
    };
    serde_json::from_str(&text).map_err(|e| format!("ledger {src}: {e}"))
}

/// Reads every simulated printer's journal through the server's API.
pub(crate) async fn load_journals_api(
    base: &str,
    operator: &str,
) -> Result<BTreeMap<String, Vec<JournalEntry>>, String> {
    let http = reqwest::Client::new();
    let base = base.trim_end_matches('/');
    let get = |path: String| {
        let http = http.clone();
        async move {
            let resp = http
                .get(format!("{base}{path}"))
                .bearer_auth(operator)
                .send()
                .await
                .map_err(|e| format!("GET {path}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("GET {path}: {}", resp.status()));
            }
            resp.json::<Value>()
                .await
                .map_err(|e| format!("GET {path}: {e}"))
        }
    };
    let printers = get("/v1/printers".into()).await?;
    let mut out = BTreeMap::new();
    for id in printers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("id").and_then(Value::as_str))
    {
        let j = get(format!("/v1/printers/{id}/simulator/journal")).await?;
        let entries: Vec<JournalEntry> =
            serde_json::from_value(j).map_err(|e| format!("journal of {id}: {e}"))?;
        out.insert(id.to_owned(), entries);
    }
    Ok(out)
}

/// Reads `flows.jsonl`.
pub(crate) fn load_flows(path: &std::path::Path) -> Result<Vec<FlowRecord>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// The `verify` command.
pub(crate) async fn command(args: &VerifyArgs) -> Result<Verdict, String> {
    let (payments, refunds) = load_database(&args.database_url).await?;
    let ledger = load_ledger(&args.ledger).await?;
    let mut journals: BTreeMap<String, Vec<JournalEntry>> = BTreeMap::new();
    let mut device_journals = true;
    if let Some(base) = &args.journals_api {
        journals.extend(load_journals_api(base, &args.operator_key).await?);
    }
    for f in &args.journal_file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let j: BTreeMap<String, Vec<JournalEntry>> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        journals.extend(j);
    }
    for url in &args.agent_journal {
        device_journals = false;
        for (printer, e) in load_agent_journal(url).await? {
            journals.entry(printer).or_default().push(e);
        }
    }
    let flows = match &args.flows {
        Some(p) => load_flows(p)?,
        None => Vec::new(),
    };
    let records = Records {
        payments,
        refunds,
        ledger,
        journals,
        device_journals,
        flows,
    };
    let verdict = check(&records, args.allow_parked);
    if let Some(out) = &args.out {
        std::fs::write(
            out,
            serde_json::to_string_pretty(&verdict).unwrap_or_default(),
        )
        .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: &str, kind: &str, amount: i64, parent: Option<&str>, reference: &str) -> Operation {
        Operation {
            id: id.into(),
            kind: kind.into(),
            status: "approved".into(),
            key: format!("{reference}/{kind}"),
            amount,
            currency: "EUR".into(),
            parent: parent.map(Into::into),
            reference: reference.into(),
            at: 0,
        }
    }

    fn entry(n: u64, kind: &str, key: Option<&str>, amount: i64) -> JournalEntry {
        JournalEntry {
            number: n,
            kind: kind.into(),
            sale_key: key.map(Into::into),
            amount,
        }
    }

    /// One fiscalized payment of 1000 with a reversed refund of 400.
    fn clean() -> Records {
        Records {
            payments: vec![DbPayment {
                id: "p1".into(),
                restaurant: "r".into(),
                amount: 1000,
                status: "fiscalized".into(),
                receipt: Some(Doc {
                    printer: "pr".into(),
                    number: 1,
                    amount: 1000,
                }),
            }],
            refunds: vec![DbRefund {
                id: "f1".into(),
                payment: "p1".into(),
                restaurant: "r".into(),
                amount: 400,
                status: "reversed".into(),
                reversal: Some(Doc {
                    printer: "pr".into(),
                    number: 2,
                    amount: -400,
                }),
            }],
            ledger: vec![
                op("a1", "authorize", 1000, None, "p1"),
                op("c1", "capture", 1000, Some("a1"), "p1"),
                op("r1", "refund", 400, Some("c1"), "f1"),
            ],
            journals: BTreeMap::from([(
                "pr".to_owned(),
                vec![
                    entry(1, "receipt", Some("p1/receipt"), 1000),
                    entry(2, "reversal", Some("f1/reversal"), -400),
                    entry(3, "z_report", None, 600),
                ],
            )]),
            device_journals: true,
            flows: vec![FlowRecord {
                payment: Some("p1".into()),
                refund: Some("f1".into()),
                ..FlowRecord::default()
            }],
        }
    }

    fn kinds(r: &Records) -> Vec<&'static str> {
        check(r, false).counts.keys().copied().collect()
    }

    #[test]
    fn clean_records_pass() {
        let v = check(&clean(), false);
        assert!(v.ok(), "{:?}", v.findings);
        assert_eq!((v.fiscalized, v.reversed), (1, 1));
    }

    #[test]
    fn each_discrepancy_is_named() {
        let mut r = clean();
        r.flows.push(FlowRecord {
            payment: Some("p9".into()),
            ..FlowRecord::default()
        });
        assert_eq!(kinds(&r), ["payment_lost"]);

        let mut r = clean();
        r.journals
            .get_mut("pr")
            .unwrap()
            .push(entry(4, "receipt", Some("p1/receipt.1"), 1000));
        let k = kinds(&r);
        assert!(
            k.contains(&"fiscalized_twice") && k.contains(&"totals_disagree"),
            "{k:?}"
        );

        let mut r = clean();
        r.journals
            .get_mut("pr")
            .unwrap()
            .retain(|e| e.kind != "receipt");
        r.journals
            .get_mut("pr")
            .unwrap()
            .retain(|e| e.kind != "z_report");
        let k = kinds(&r);
        assert!(
            k.contains(&"charged_not_fiscalized") && k.contains(&"database_disagrees"),
            "{k:?}"
        );

        let mut r = clean();
        r.journals
            .get_mut("pr")
            .unwrap()
            .retain(|e| e.kind == "receipt");
        let k = kinds(&r);
        assert!(
            k.contains(&"refunded_without_reversal") && k.contains(&"totals_disagree"),
            "{k:?}"
        );

        let mut r = clean();
        r.ledger.push(op("c2", "capture", 1000, Some("a1"), "p1"));
        assert!(kinds(&r).contains(&"charged_twice"));

        let mut r = clean();
        r.payments[0].status = "captured".into();
        assert!(kinds(&r).contains(&"payment_not_finished"));

        let mut r = clean();
        r.ledger.push(op("a2", "authorize", 700, None, "p1"));
        assert_eq!(kinds(&r), ["authorization_never_settled"]);

        let mut r = clean();
        r.journals.get_mut("pr").unwrap()[2].amount = 500;
        assert_eq!(kinds(&r), ["z_report_total"]);
    }
}
