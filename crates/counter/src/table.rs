//! The counter's console table: the live windows in the seed's columns.

use pipeline_core::schema::event_time;
use pipeline_core::window::{Row, WindowStats, color_column};

/// Rows as the seed's console table with the emit columns after the seed's (`revision`,
/// `final`, `watermark`, `late_alerts`): a script reading the seed's columns by position still
/// finds them where they were.
pub fn render_rows(rows: &[Row], colors: &[String]) -> String {
    let windows: Vec<&WindowStats> = rows.iter().map(|r| &r.stats).collect();
    let meta = rows.iter().map(|r| {
        let watermark = r.meta.watermark.as_ref().map_or_else(|| "none".to_owned(), event_time::format);
        [r.meta.revision.to_string(), r.meta.is_final.to_string(), watermark, r.meta.late_alerts.to_string()]
    });
    build(&windows, colors, Some(meta.collect()))
}

/// The live windows as the seed's console table.
pub fn render_table(windows: &[&WindowStats], colors: &[String]) -> String {
    build(windows, colors, None)
}

fn build(windows: &[&WindowStats], colors: &[String], meta: Option<Vec<[String; 4]>>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_FULL_CONDENSED);
    let mut header = vec!["window_start".to_owned(), "window_end".to_owned(), "num_of_rows".to_owned()];
    header.extend(colors.iter().map(|c| color_column(c)));
    header.extend(["maximum_speed", "maximum_gear", "maximum_rpm"].map(str::to_owned));
    if meta.is_some() {
        header.extend(["revision", "final", "watermark", "late_alerts"].map(str::to_owned));
    }
    table.set_header(header);
    for (i, w) in windows.iter().enumerate() {
        let mut row = vec![
            w.start.format("%Y-%m-%d %H:%M:%S").to_string(),
            w.end.format("%Y-%m-%d %H:%M:%S").to_string(),
            w.rows.to_string(),
        ];
        row.extend(w.colors.iter().map(u64::to_string));
        row.extend([w.max_speed.to_string(), w.max_gear.to_string(), w.max_rpm.to_string()]);
        if let Some(meta) = meta.as_ref().and_then(|m| m.get(i)) {
            row.extend(meta.iter().cloned());
        }
        table.add_row(row);
    }
    for i in 2..table.column_count() {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::{Duration, Instant};

    use chrono::TimeZone;
    use pipeline_core::window::{AlertPoint, WindowConfig, Windows};

    use super::*;

    fn t(h: u32, m: u32, s: u32) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 5, 1, h, m, s).unwrap()
    }

    #[test]
    fn table_has_the_seeds_columns() {
        let mut w = Windows::new(WindowConfig {
            size: chrono::Duration::minutes(15),
            watermark_delay: chrono::Duration::minutes(60),
            idle_timeout: Duration::from_secs(30),
            colors: vec!["Black".into(), "White".into(), "Silver".into()],
        });
        let alert = AlertPoint { at: t(10, 1, 0), speed: 121.5, gear: 3, rpm: 6100, color: Some("Black") };
        w.add(0, alert, Instant::now());
        let live: Vec<_> = w.live().collect();
        let table = render_table(&live, &w.config().colors);
        let header = table.lines().nth(1).unwrap();
        for col in [
            "window_start",
            "window_end",
            "num_of_rows",
            "num_of_black",
            "num_of_white",
            "num_of_silver",
            "maximum_speed",
            "maximum_gear",
            "maximum_rpm",
        ] {
            assert!(header.contains(col), "{table}");
        }
        assert!(table.contains("2026-05-01 10:00:00") && table.contains("121.5") && table.contains("6100"), "{table}");
    }
}
