//! The event stages (enriched, alerts): each output record found by id and compared with what
//! the library code makes of its input event (`JoinIndex::enrich`; for an alert,
//! `AlertRules::check_event` under the version that judged it, see `judged`); then what is
//! missing or duplicated, once all is read.

use pipeline_core::rules::AlertReasons;
use pipeline_core::schema::{EnrichedEvent, JsonEvent, event_time};
use rdkafka::message::BorrowedHeaders;

use super::compare::{Ctx, Example, Inputs, StageReport};
use super::judged;

/// Which output of the events a stage holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every input event, enriched.
    Enriched,
    /// The enriched events the rules flag, with their reasons.
    Alerts,
}

/// One event stage being read: copies seen per input event.
#[derive(Debug)]
pub struct EventStage {
    /// Which stage.
    kind: Kind,
    /// Copies found, per input event.
    seen: Vec<u32>,
    /// Whether a copy differed, per input event (counted once).
    differs: Vec<bool>,
    /// Enriched: where the first copy is (partition, offset), per input event. Alerts: unused.
    at: Vec<Option<(i32, i64)>>,
    /// Alerts: the rules version (index in the book) the first copy names, per input event.
    version: Vec<Option<u16>>,
    /// The report being filled.
    report: StageReport,
}

impl EventStage {
    /// A stage reading `topic`, for `inputs`.
    pub fn new(kind: Kind, topic: &str, inputs: &Inputs) -> Self {
        let name = match kind {
            Kind::Enriched => "enriched",
            Kind::Alerts => "alerts",
        };
        let n = inputs.events.len();
        let (at, version) = match kind {
            Kind::Enriched => (vec![None; n], Vec::new()),
            Kind::Alerts => (Vec::new(), vec![None; n]),
        };
        Self { kind, seen: vec![0; n], differs: vec![false; n], at, version, report: StageReport::new(name, topic) }
    }

    /// Takes in one output record.
    pub fn add(
        &mut self,
        ctx: &Ctx<'_>,
        inputs: &Inputs,
        (partition, offset): (i32, i64),
        value: Option<&[u8]>,
        headers: Option<&BorrowedHeaders>,
    ) {
        let r = &mut self.report;
        r.records += 1;
        let at = || Some(format!("{partition}/{offset}"));
        let found = match EnrichedEvent::decode(value.unwrap_or_default(), ctx.limit) {
            Ok(e) => e,
            Err(e) => {
                r.invalid += 1;
                r.example(
                    ctx.examples,
                    Example { kind: "invalid", event_id: None, window_start: None, at: at(), detail: e.to_string() },
                );
                return;
            }
        };
        if !ctx.range.contains(found.event_time) {
            r.outside_range += 1;
            return;
        }
        r.found += 1;
        let id = found.event_id;
        let example = |kind, detail| Example { kind, event_id: Some(id), window_start: None, at: at(), detail };
        let Some(i) = inputs.get(id) else {
            r.unexpected += 1;
            r.example(ctx.examples, example("unexpected", "no input event has this id".into()));
            return;
        };
        let input = &inputs.events[i];
        let expected = ctx.join.enrich(input.event.clone()).0;
        let mut detail = fields_differ(&expected, &found);
        match self.kind {
            Kind::Enriched => {
                self.at[i].get_or_insert((partition, offset));
            }
            Kind::Alerts => {
                // Judged by the version it names (the table in use if it names none).
                let version = match judged::version(headers) {
                    Ok(Some(v)) => ctx.rules.index(&v).ok_or_else(|| {
                        format!("judged by rules version {v}, which the store does not keep (raise --rules-keep)")
                    }),
                    Ok(None) => Ok(ctx.rules.current()),
                    Err(e) => Err(e),
                };
                let version = match version {
                    Ok(v) => v,
                    Err(problem) => {
                        r.different += u64::from(!self.differs[i]);
                        self.differs[i] = true;
                        r.example(ctx.examples, example("different", problem));
                        self.seen[i] += 1;
                        return;
                    }
                };
                let rules = *ctx.rules.rules(version).for_model(expected.model_id);
                let want = rules.check_event(&expected);
                if want.is_empty() {
                    let v = ctx.rules.version(version);
                    r.unexpected += 1;
                    r.example(
                        ctx.examples,
                        example("unexpected", format!("rules version {v} raise no alert for this event")),
                    );
                    return;
                }
                self.version[i].get_or_insert(version);
                match judged::tail(value.unwrap_or_default()) {
                    Ok((got, thresholds)) => {
                        if !got.iter().copied().eq(want.names()) {
                            push(&mut detail, format!("alert_reasons: expected {:?}, found {got:?}", names(want)));
                        }
                        if thresholds.is_some_and(|t| t != rules) {
                            push(&mut detail, format!("thresholds: expected {rules:?}, found {thresholds:?}"));
                        }
                    }
                    Err(e) => push(&mut detail, format!("alert_reasons: {e}")),
                }
            }
        }
        self.seen[i] += 1;
        if !detail.is_empty() && !self.differs[i] {
            self.differs[i] = true;
            r.different += 1;
            r.example(ctx.examples, example("different", detail));
        }
    }

    /// Sets every input's `alert` once `enriched` and `alerts` are read: an event with an alert
    /// its version raises is one; any other is one if every version that may have judged it
    /// raises it (`judged::candidates`).
    pub fn judge(inputs: &mut Inputs, ctx: &Ctx<'_>, enriched: &Self, alerts: &Self) {
        let candidates = judged::candidates(&enriched.at, &alerts.version, ctx.rules.current());
        for ((input, versions), version) in inputs.events.iter_mut().zip(candidates).zip(&alerts.version) {
            input.alert = version.is_some() || {
                let e = ctx.join.enrich(input.event.clone()).0;
                versions.iter().all(|&v| !ctx.rules.rules(v).for_model(e.model_id).check_event(&e).is_empty())
            };
        }
    }

    /// Missing and duplicated events, once everything is read; with the copies found per input
    /// event (the windows stage counts the alerts as often as their topic holds them).
    pub fn finish(mut self, ctx: &Ctx<'_>, inputs: &Inputs) -> (StageReport, Vec<u32>) {
        let r = &mut self.report;
        for (i, input) in inputs.events.iter().enumerate() {
            if self.kind == Kind::Alerts && !input.alert {
                continue;
            }
            r.expected += 1;
            let (seen, want) = (self.seen[i], input.copies);
            let example = |kind, detail| Example {
                kind,
                event_id: Some(input.event.event_id),
                window_start: None,
                at: None,
                detail,
            };
            if seen == 0 {
                r.missing += 1;
                r.example(
                    ctx.examples,
                    example("missing", format!("event at {}", event_time::format(&input.event.event_time))),
                );
            } else if seen > want {
                r.duplicated += 1;
                r.extra_copies += u64::from(seen - want);
                r.example(ctx.examples, example("duplicated", format!("{seen} copies, {want} expected")));
            }
        }
        (self.report, self.seen)
    }
}

fn push(detail: &mut String, more: String) {
    if !detail.is_empty() {
        detail.push_str("; ");
    }
    detail.push_str(&more);
}

fn names(r: AlertReasons) -> Vec<&'static str> {
    r.names().collect()
}

/// The fields of `found` that differ from `expected`, as `name: expected X, found Y; …`.
fn fields_differ(expected: &EnrichedEvent<'_>, found: &EnrichedEvent<'_>) -> String {
    let mut out = String::new();
    macro_rules! field {
        ($($f:ident),*) => {$(
            if expected.$f != found.$f {
                push(&mut out, format!(concat!(stringify!($f), ": expected {:?}, found {:?}"), expected.$f, found.$f));
            }
        )*};
    }
    field!(event_time, car_id, speed, rpm, gear, driver_id, brand_name, model_name, color_name, expected_gear);
    // Written since the rules went per model: a record from an older enricher has none.
    if found.model_id.is_some() && found.model_id != expected.model_id {
        push(&mut out, format!("model_id: expected {:?}, found {:?}", expected.model_id, found.model_id));
    }
    out
}
