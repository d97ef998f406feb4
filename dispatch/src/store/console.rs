//! What the operator's console shows of a delivery day: each route's phones (with the days they
//! hold) and parcels with where each stands, judged as the customer's page judges it. Reads only;
//! the console's actions are the operator operations of `parcels.rs`, audited there.

use super::customers::ParcelStatus;
use super::*;

/// A phone on a route, as the console lists it.
#[derive(Clone, Debug)]
pub struct ConsolePhone {
    pub device_id: String,
    pub route_id: String,
    pub manifest_seq: i64,
    /// The delivery days it holds (what it said at its last full manifest).
    pub days: Vec<String>,
}

/// A parcel of the day, as the console lists it.
#[derive(Clone, Debug)]
pub struct ConsoleParcel {
    pub parcel_id: String,
    pub route_id: String,
    pub stop_seq: i64,
    pub needs_code: bool,
    pub status: ParcelStatus,
}

impl Dispatch {
    /// The phones of every route with parcels on `date`, and those parcels in route and stop order.
    pub fn console_day(&self, date: NaiveDate) -> Result<(Vec<ConsolePhone>, Vec<ConsoleParcel>)> {
        self.run(|tx| {
            let day = date.to_string();
            let rows: Vec<(String, String, i64, bool)> = tx.all(
                "SELECT parcel_id, route_id, stop_seq, needs_code FROM parcel WHERE delivery_date = ?1
                  ORDER BY route_id, stop_seq, parcel_id",
                params![day],
            )?;
            let mut parcels = Vec::with_capacity(rows.len());
            for (parcel_id, route_id, stop_seq, needs_code) in rows {
                let status = self.status_of(tx, &parcel_id)?;
                parcels.push(ConsoleParcel { parcel_id, route_id, stop_seq, needs_code, status });
            }
            let phones: Vec<(String, String, i64)> = tx.all(
                "SELECT device_id, route_id, manifest_seq FROM device
                  WHERE route_id IN (SELECT DISTINCT route_id FROM parcel WHERE delivery_date = ?1)
                  ORDER BY route_id, device_id",
                params![day],
            )?;
            let mut listed = Vec::with_capacity(phones.len());
            for (device_id, route_id, manifest_seq) in phones {
                let days: Vec<String> = tx.all(
                    "SELECT delivery_date FROM device_day WHERE device_id = ?1 ORDER BY delivery_date",
                    params![device_id],
                )?;
                listed.push(ConsolePhone { device_id, route_id, manifest_seq, days });
            }
            Ok((listed, parcels))
        })
    }

    /// Where one parcel stands (404 for an unknown id).
    pub fn parcel_status(&self, parcel_id: &str) -> Result<ParcelStatus> {
        self.run(|tx| self.status_of(tx, parcel_id))
    }

    fn status_of(&self, tx: &Tx<'_>, parcel_id: &str) -> Result<ParcelStatus> {
        let (date, zone, departed): (String, String, bool) = tx
            .opt(
                "SELECT delivery_date, time_zone, departed_at_ms IS NOT NULL FROM parcel WHERE parcel_id = ?1",
                params![parcel_id],
            )?
            .ok_or_else(|| DispatchError::NotFound(format!("parcel {parcel_id}")))?;
        self.customer_status(tx, parcel_id, &date, &zone, departed)
    }
}
