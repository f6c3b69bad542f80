//! The Datecs ISL driver.

use super::Dialect;
use super::commands::{self as c, ReplyFields};
use super::link::{Link, LinkConfig, LinkStats};
use super::status;
use super::transport::{Connector, TcpConnector};
use crate::datetime::DeviceDateTime;
use crate::error::Error;
use crate::message::DeviceMessage;
use crate::money::Money;
use crate::outcome::{Document, OpenReceipt, Snapshot};
use crate::printer::{Capabilities, DeviceInfo, FiscalPrinter, RawReply};
use crate::receipt::{Item, Payment, PaymentType, Receipt, ReportKind, Reversal};
use crate::status::StatusReport;
use crate::validate::{Invalid, Limits, Totals, validate_cash, validate_receipt};
use async_trait::async_trait;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// Device codes of the payment types, indexed by [`PaymentType::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentCodes(pub [u8; 8]);

impl PaymentCodes {
    /// The default mapping of a dialect: classic `P C N D I J K L`
    /// (cash, card, cheque, voucher, external voucher, bank, reserved 1, 2),
    /// X `0`..`7` in the same order. Remap per device where it differs.
    pub fn default_for(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Classic => Self(*b"PCNDIJKL"),
            Dialect::X => Self(*b"01234567"),
        }
    }

    /// The device code of `t`.
    pub fn code(&self, t: PaymentType) -> u8 {
        self.0[t.index().min(7)]
    }
}

/// Configuration of a [`DatecsPrinter`].
#[derive(Debug, Clone)]
pub struct DatecsConfig {
    /// Which framing the device speaks (no default: given to [`DatecsConfig::new`]).
    pub dialect: Dialect,
    /// Link timing. Default: [`LinkConfig::default`].
    pub link: LinkConfig,
    /// Document limits. Default: [`Limits::default`].
    pub limits: Limits,
    /// Payment type codes. Default: [`PaymentCodes::default_for`] the dialect.
    pub payment_codes: PaymentCodes,
    /// While paused for paper or cover, how often the status is polled. Default: 2 s.
    pub pause_poll: Duration,
    /// How long a document may stay paused before the driver gives up. Default: 1 h.
    pub pause_limit: Duration,
}

impl DatecsConfig {
    /// Defaults for `dialect`.
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            link: LinkConfig::default(),
            limits: Limits::default(),
            payment_codes: PaymentCodes::default_for(dialect),
            pause_poll: Duration::from_secs(2),
            pause_limit: Duration::from_secs(3600),
        }
    }
}

/// A Datecs ISL fiscal printer (classic or X) over any [`Connector`].
///
/// Every method takes the link for its whole sequence of frames, so a
/// receipt is never interleaved with another command.
#[derive(Debug)]
pub struct DatecsPrinter {
    cfg: DatecsConfig,
    caps: Capabilities,
    link: Mutex<Link>,
    last_status: StdMutex<Option<StatusReport>>,
    paused: watch::Sender<Option<DeviceMessage>>,
}

impl DatecsPrinter {
    /// A driver over `connector`.
    pub fn new(connector: Arc<dyn Connector>, cfg: DatecsConfig) -> Self {
        let caps = Capabilities {
            driver: match cfg.dialect {
                Dialect::Classic => "datecs-isl".into(),
                Dialect::X => "datecs-x".into(),
            },
            limits: cfg.limits.clone(),
            sale_number: true,
            cancel_after_payment: false,
        };
        Self {
            link: Mutex::new(Link::new(cfg.dialect, connector, cfg.link.clone())),
            caps,
            cfg,
            last_status: StdMutex::new(None),
            paused: watch::channel(None).0,
        }
    }

    /// A driver for a LAN device at `addr` (`host:port`) with default settings.
    pub fn tcp(addr: impl Into<String>, dialect: Dialect) -> Self {
        Self::new(
            Arc::new(TcpConnector::new(addr)),
            DatecsConfig::new(dialect),
        )
    }

    /// The link's counters.
    pub async fn link_stats(&self) -> LinkStats {
        self.link.lock().await.stats()
    }

    /// Why the current document is paused (paper out, cover open), if it is.
    pub fn paused(&self) -> watch::Receiver<Option<DeviceMessage>> {
        self.paused.subscribe()
    }

    fn dialect(&self) -> Dialect {
        self.cfg.dialect
    }

    fn store_status(&self, r: &StatusReport) {
        let mut g = self.last_status.lock().unwrap_or_else(|e| e.into_inner());
        *g = Some(r.clone());
    }

    /// One command; errors from status bits or X ErrorCode become [`Error`]s.
    async fn cmd(&self, link: &mut Link, code: u16, data: &[u8]) -> Result<ReplyFields, Error> {
        let f = link.transact(code, data).await?;
        let report = status::decode(self.dialect(), &f.status);
        self.store_status(&report);
        let fields = c::split_reply(self.dialect(), &f.data)?;
        if let Some(e) = status::reply_error(&report, fields.error_code) {
            return Err(e);
        }
        Ok(fields)
    }

    /// A command inside a document: paper out, cover open and a hot head
    /// pause it (the device refused it without changing state); the status
    /// is polled until the condition clears, then the command is sent again.
    async fn doc_cmd(&self, link: &mut Link, code: u16, data: &[u8]) -> Result<ReplyFields, Error> {
        let started = tokio::time::Instant::now();
        loop {
            match self.cmd(link, code, data).await {
                Err(Error::NeedsOperator(m)) => {
                    tracing::warn!(code = %m.code, "document paused: {}", m.text);
                    self.paused.send_replace(Some(m.clone()));
                    loop {
                        if started.elapsed() >= self.cfg.pause_limit {
                            self.paused.send_replace(None);
                            return Err(Error::NeedsOperator(m));
                        }
                        tokio::time::sleep(self.cfg.pause_poll).await;
                        let f = match link.transact(c::STATUS, b"").await {
                            Ok(f) => f,
                            Err(e) => {
                                self.paused.send_replace(None);
                                return Err(e);
                            }
                        };
                        let r = status::decode(self.dialect(), &f.status);
                        self.store_status(&r);
                        let fl = r.flags;
                        if !(fl.paper_out || fl.cover_open || fl.head_overheated) {
                            break;
                        }
                    }
                    self.paused.send_replace(None);
                    tracing::info!("document resumed");
                }
                other => return other,
            }
        }
    }

    async fn last_doc_no(&self, link: &mut Link) -> Result<u64, Error> {
        self.cmd(link, c::LAST_DOC, b"").await?.uint(0)
    }

    async fn device_time(&self, link: &mut Link) -> Option<DeviceDateTime> {
        let f = self.cmd(link, c::DATETIME, b"").await.ok()?;
        DeviceDateTime::parse_wire(f.fields.first()?)
    }

    async fn pay(&self, link: &mut Link, p: &Payment) -> Result<bool, Error> {
        let data = c::payment(
            self.dialect(),
            self.cfg.payment_codes.code(p.kind),
            p.amount,
        );
        let r = self.doc_cmd(link, c::PAYMENT, &data).await?;
        // Classic: "D12.34" / "R0.50"; X: "D", "12.34".
        let code = r.get(0)?.chars().next().unwrap_or('F');
        match code {
            'D' => Ok(false),
            'R' => Ok(true),
            _ => Err(Error::Rejected(DeviceMessage::new(
                crate::message::codes::E406_PAYMENT,
                format!("PaidCode {code}"),
            ))),
        }
    }

    async fn body(&self, link: &mut Link, r: &Receipt) -> Result<(), Error> {
        for item in &r.items {
            match item {
                Item::Sale(s) => {
                    let d = c::sale(self.dialect(), s)?;
                    self.doc_cmd(link, c::SALE, &d).await?;
                }
                Item::Comment(t) => {
                    let d = c::comment(self.dialect(), t)?;
                    self.doc_cmd(link, c::TEXT, &d).await?;
                }
                Item::Subtotal(m) => {
                    let d = c::subtotal(self.dialect(), *m);
                    self.doc_cmd(link, c::SUBTOTAL, &d).await?;
                }
            }
        }
        Ok(())
    }

    async fn pay_and_close(
        &self,
        link: &mut Link,
        payments: &[Payment],
        amount: Option<Money>,
    ) -> Result<Document, Error> {
        for p in payments {
            if self.pay(link, p).await? {
                break;
            }
        }
        self.doc_cmd(link, c::CLOSE, b"").await?;
        let doc_no = self.last_doc_no(link).await?;
        let amount = match amount {
            Some(a) => a,
            None => {
                let t = self.transaction(link).await?;
                t.1.map_or(Money::ZERO, |o| o.amount)
            }
        };
        let at = self.device_time(link).await;
        Ok(Document {
            doc_no,
            amount,
            at,
            z_no: None,
            recovered: false,
            fm_serial: None,
            serial: None,
        })
    }

    async fn print_doc(
        &self,
        open_cmd: u16,
        open_data: Vec<u8>,
        r: &Receipt,
        totals: Totals,
    ) -> Result<Document, Error> {
        let mut link = self.link.lock().await;
        self.doc_cmd(&mut link, open_cmd, &open_data).await?;
        self.body(&mut link, r).await?;
        self.pay_and_close(&mut link, &r.payments, Some(totals.total))
            .await
    }

    /// (open receipt, last receipt) from `TRANSACTION`.
    async fn transaction(
        &self,
        link: &mut Link,
    ) -> Result<(Option<OpenReceipt>, Option<OpenReceipt>), Error> {
        let data = c::transaction(self.dialect());
        let r = self.cmd(link, c::TRANSACTION, &data).await?;
        let storno_flag = self
            .last_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|s| s.flags.storno_open);
        let (open, storno, items, amount, tender) = match self.dialect() {
            // Open,Items,Amount,Tender (amounts in minor units)
            Dialect::Classic => (
                r.uint(0)? != 0,
                storno_flag,
                r.uint(1)?,
                r.money(2, false)?,
                r.money(3, false)?,
            ),
            // IsOpen,Number,Items,Amount,Payed
            Dialect::X => {
                let is_open = r.uint(0)?;
                (
                    is_open != 0,
                    is_open >= 2,
                    r.uint(2)?,
                    r.money(3, true)?,
                    r.money(4, true)?,
                )
            }
        };
        let o = OpenReceipt {
            storno,
            items: u32::try_from(items).unwrap_or(u32::MAX),
            amount,
            tender,
        };
        Ok(if open {
            (Some(o), None)
        } else {
            (None, Some(o))
        })
    }
}

#[async_trait]
impl FiscalPrinter for DatecsPrinter {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn last_status(&self) -> Option<StatusReport> {
        self.last_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn info(&self) -> Result<DeviceInfo, Error> {
        let mut link = self.link.lock().await;
        let data = c::info(self.dialect());
        let r = self.cmd(&mut link, c::INFO, &data).await?;
        Ok(match self.dialect() {
            // Name,FwRev FwDate,Chk,Sw,Ser,FM
            Dialect::Classic => DeviceInfo {
                model: r.get(0)?.to_owned(),
                firmware: r.get(1)?.to_owned(),
                serial: r.get(4)?.to_owned(),
                fm_serial: r.get(5)?.to_owned(),
            },
            // Name,FwRev,FwDate,FwTime,Checksum,Sw,SerialNumber,FMNumber
            Dialect::X => DeviceInfo {
                model: r.get(0)?.to_owned(),
                firmware: format!("{} {}", r.get(1)?, r.get(2)?),
                serial: r.get(6)?.to_owned(),
                fm_serial: r.get(7)?.to_owned(),
            },
        })
    }

    async fn status(&self) -> Result<StatusReport, Error> {
        let mut link = self.link.lock().await;
        let f = link.transact(c::STATUS, b"").await?;
        let r = status::decode(self.dialect(), &f.status);
        self.store_status(&r);
        Ok(r)
    }

    async fn snapshot(&self) -> Result<Snapshot, Error> {
        let mut link = self.link.lock().await;
        // Status first, so the storno flag is fresh for the classic dialect.
        let f = link.transact(c::STATUS, b"").await?;
        self.store_status(&status::decode(self.dialect(), &f.status));
        let (open, last_receipt) = self.transaction(&mut link).await?;
        let last_doc_no = self.last_doc_no(&mut link).await?;
        let z = self.cmd(&mut link, c::LAST_FM_RECORD, b"").await?;
        let z_no = u32::try_from(z.uint(0)?).map_err(|_| Error::BadReply("z number".into()))?;
        Ok(Snapshot {
            last_doc_no,
            z_no,
            open,
            last_receipt,
        })
    }

    async fn print_receipt(&self, r: &Receipt) -> Result<Document, Error> {
        let totals = validate_receipt(r, &self.caps.limits)?;
        let open = c::open(self.dialect(), &r.operator, r.sale_number.as_deref());
        self.print_doc(c::OPEN, open, r, totals).await
    }

    async fn print_reversal(&self, rev: &Reversal) -> Result<Document, Error> {
        let totals = validate_receipt(&rev.receipt, &self.caps.limits)?;
        let fm = &rev.original.fm_serial;
        if fm.is_empty() || fm.len() > 16 || !fm.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Invalid(Invalid::BadSaleNumber { max: 16 }));
        }
        let (cmd, data) = c::open_storno(
            self.dialect(),
            &rev.receipt.operator,
            rev.reason,
            rev.original.doc_no,
            rev.original.at,
            fm,
            rev.receipt.sale_number.as_deref(),
        );
        self.print_doc(cmd, data, &rev.receipt, totals).await
    }

    async fn cancel_open(&self) -> Result<(), Error> {
        let mut link = self.link.lock().await;
        self.cmd(&mut link, c::CANCEL, b"").await.map(|_| ())
    }

    async fn finish_open(&self, payments: &[Payment]) -> Result<Document, Error> {
        let mut link = self.link.lock().await;
        let mut d = self.pay_and_close(&mut link, payments, None).await?;
        d.recovered = true;
        Ok(d)
    }

    async fn cash_move(&self, amount: Money) -> Result<Document, Error> {
        validate_cash(amount, &self.caps.limits)?;
        let mut link = self.link.lock().await;
        let data = c::cash(self.dialect(), amount);
        let r = self.doc_cmd(&mut link, c::CASH, &data).await?;
        if self.dialect() == Dialect::Classic && r.get(0)? != "P" {
            return Err(Error::Rejected(DeviceMessage::new(
                crate::message::codes::E404_NOT_ALLOWED,
                format!("ExitCode {}", r.get(0)?),
            )));
        }
        let doc_no = self.last_doc_no(&mut link).await?;
        let at = self.device_time(&mut link).await;
        Ok(Document {
            doc_no,
            amount,
            at,
            z_no: None,
            recovered: false,
            fm_serial: None,
            serial: None,
        })
    }

    async fn report(&self, kind: ReportKind) -> Result<Document, Error> {
        let mut link = self.link.lock().await;
        let data = c::report(self.dialect(), kind == ReportKind::Z);
        let r = self.doc_cmd(&mut link, c::REPORT, &data).await?;
        let z_no = u32::try_from(r.uint(0)?).map_err(|_| Error::BadReply("z number".into()))?;
        let amount = r.money(1, true).unwrap_or(Money::ZERO);
        let doc_no = self.last_doc_no(&mut link).await?;
        let at = self.device_time(&mut link).await;
        Ok(Document {
            doc_no,
            amount,
            at,
            z_no: (kind == ReportKind::Z).then_some(z_no),
            recovered: false,
            fm_serial: None,
            serial: None,
        })
    }

    async fn duplicate_last(&self) -> Result<(), Error> {
        let mut link = self.link.lock().await;
        let data = c::duplicate(self.dialect());
        self.doc_cmd(&mut link, c::DUPLICATE, &data)
            .await
            .map(|_| ())
    }

    async fn raw(&self, cmd: u16, data: &[u8]) -> Result<RawReply, Error> {
        let mut link = self.link.lock().await;
        let f = link.transact(cmd, data).await?;
        let status = status::decode(self.dialect(), &f.status);
        self.store_status(&status);
        Ok(RawReply {
            data: f.data,
            status,
        })
    }
}
