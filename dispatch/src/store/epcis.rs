//! The stored receipts as an EPCIS 2.0 document ([`crate::epcis`]): every receipt dispatch did
//! not reject, of one delivery day's parcels or of all, read in one transaction so the document
//! states one moment of the ledger.

use std::collections::HashMap;

use crate::epcis::{self, Flagged, ParcelFacts};

use super::receipts::{ReceiptRow, parse_rows};
use super::*;

/// A parcel's id, zone, SSCC and whether it is a pickup.
type ParcelRow = (String, String, Option<String>, bool);

impl Dispatch {
    /// Operator: the EPCIS 2.0 JSON-LD document of the receipts about `date`'s parcels (every
    /// day's when `None`), with or without those held for review, and how many events it holds.
    pub fn epcis_events(&self, date: Option<NaiveDate>, flagged: Flagged) -> Result<(Vec<u8>, usize)> {
        let (receipts, parcels) = self.run(|tx| {
            let (receipts, parcels): (Vec<ReceiptRow>, Vec<ParcelRow>) = match date {
                Some(date) => {
                    let day = date.to_string();
                    (
                        tx.all(
                            "SELECT body, signature, status, reason FROM receipt WHERE status <> 'rejected' AND receipt_id IN
                               (SELECT rp.receipt_id FROM receipt_parcel rp JOIN parcel p ON p.parcel_id = rp.parcel_id
                                 WHERE p.delivery_date = ?1)
                             ORDER BY device_id, seq",
                            params![day],
                        )?,
                        tx.all(
                            "SELECT p.parcel_id, p.time_zone, g.sscc, k.parcel_id IS NOT NULL FROM parcel p
                               LEFT JOIN parcel_gs1 g ON g.parcel_id = p.parcel_id
                               LEFT JOIN pickup k ON k.parcel_id = p.parcel_id WHERE p.delivery_date = ?1",
                            params![day],
                        )?,
                    )
                }
                None => (
                    tx.all(
                        "SELECT body, signature, status, reason FROM receipt WHERE status <> 'rejected'
                          ORDER BY device_id, seq",
                        params![],
                    )?,
                    tx.all(
                        "SELECT p.parcel_id, p.time_zone, g.sscc, k.parcel_id IS NOT NULL FROM parcel p
                           LEFT JOIN parcel_gs1 g ON g.parcel_id = p.parcel_id
                           LEFT JOIN pickup k ON k.parcel_id = p.parcel_id",
                        params![],
                    )?,
                ),
            };
            Ok((parse_rows(receipts)?, parcels))
        })?;
        let parcels: HashMap<String, ParcelFacts> = parcels
            .into_iter()
            .map(|(id, time_zone, sscc, pickup)| (id, ParcelFacts { time_zone, sscc, pickup }))
            .collect();
        let events = epcis::events(&receipts, &parcels, flagged);
        let document = epcis::document(&events, self.now()?);
        let bytes = serde_json::to_vec_pretty(&document).map_err(|e| bad(e.to_string()))?;
        Ok((bytes, events.len()))
    }
}
