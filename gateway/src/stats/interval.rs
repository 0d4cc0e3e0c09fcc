//! Calendar arithmetic for stats intervals: UTC, proleptic Gregorian, milliseconds since the
//! epoch. No date crate: all we need is days ↔ civil dates (Howard Hinnant's algorithms), unit
//! boundaries (months differ in length) and Ably's interval ids.

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The granularity of a stats record (Ably's `unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    Month,
}

impl Unit {
    pub fn parse(unit: &str) -> Option<Unit> {
        match unit {
            "minute" => Some(Unit::Minute),
            "hour" => Some(Unit::Hour),
            "day" => Some(Unit::Day),
            "month" => Some(Unit::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Month => "month",
        }
    }

    /// The start of the interval of this unit that holds `ms`.
    pub fn floor(self, ms: u64) -> u64 {
        match self {
            Unit::Minute => ms - ms % MINUTE_MS,
            Unit::Hour => ms - ms % HOUR_MS,
            Unit::Day => ms - ms % DAY_MS,
            Unit::Month => {
                let (year, month, _) = civil_from_days(days(ms));
                epoch_ms(year, month, 1)
            }
        }
    }

    /// The start of the interval after the one holding `ms`.
    pub fn next(self, ms: u64) -> u64 {
        match self {
            Unit::Minute => self.floor(ms) + MINUTE_MS,
            Unit::Hour => self.floor(ms) + HOUR_MS,
            Unit::Day => self.floor(ms) + DAY_MS,
            Unit::Month => {
                let (year, month, _) = civil_from_days(days(ms));
                if month == 12 {
                    epoch_ms(year + 1, 1, 1)
                } else {
                    epoch_ms(year, month + 1, 1)
                }
            }
        }
    }

    /// Ably's `intervalId` for the interval holding `ms`: `yyyy-mm-dd:hh:mm` by minute,
    /// `yyyy-mm-dd:hh` by hour, `yyyy-mm-dd:00` by day and `yyyy-mm-01:00` by month.
    pub fn interval_id(self, ms: u64) -> String {
        let start = self.floor(ms);
        let (year, month, day) = civil_from_days(days(start));
        let hour = start % DAY_MS / HOUR_MS;
        let minute = start % HOUR_MS / MINUTE_MS;
        match self {
            Unit::Minute => format!("{year:04}-{month:02}-{day:02}:{hour:02}:{minute:02}"),
            Unit::Hour | Unit::Day | Unit::Month => {
                format!("{year:04}-{month:02}-{day:02}:{hour:02}")
            }
        }
    }
}

/// Parses an interval id, `yyyy-mm-dd:hh:mm`, `yyyy-mm-dd:hh`, `yyyy-mm-dd` or `yyyy-mm`, into
/// the interval's start (ms) and its unit. `None` for anything else, or a date that does not
/// exist, or one before 1970.
pub fn parse_interval_id(id: &str) -> Option<(u64, Unit)> {
    let (date, time) = match id.split_once(':') {
        Some((date, time)) => (date, Some(time)),
        None => (id, None),
    };
    let mut date_parts = date.split('-');
    let year = number(date_parts.next()?, 4)?;
    let month = number(date_parts.next()?, 2)?;
    let day = match date_parts.next() {
        Some(day) => Some(number(day, 2)?),
        None => None,
    };
    if date_parts.next().is_some() || year < 1970 || !(1..=12).contains(&month) {
        return None;
    }
    let Some(day) = day else {
        return time
            .is_none()
            .then(|| (epoch_ms(year as i64, month, 1), Unit::Month));
    };
    if day == 0 || day > days_in_month(year as i64, month) {
        return None;
    }
    let midnight = epoch_ms(year as i64, month, day);
    let Some(time) = time else {
        return Some((midnight, Unit::Day));
    };
    let (hour, minute) = match time.split_once(':') {
        Some((hour, minute)) => (number(hour, 2)?, Some(number(minute, 2)?)),
        None => (number(time, 2)?, None),
    };
    if hour > 23 || minute.is_some_and(|m| m > 59) {
        return None;
    }
    let hour_start = midnight + u64::from(hour) * HOUR_MS;
    Some(match minute {
        Some(minute) => (hour_start + u64::from(minute) * MINUTE_MS, Unit::Minute),
        None => (hour_start, Unit::Hour),
    })
}

/// `yyyy-mm-dd:hh:mm:ss`, the form of Ably's `inProgress`.
pub fn second_id(ms: u64) -> String {
    let seconds = ms % MINUTE_MS / 1000;
    format!("{}:{seconds:02}", Unit::Minute.interval_id(ms))
}

/// Exactly `digits` ASCII digits.
fn number(text: &str, digits: usize) -> Option<u32> {
    (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn days(ms: u64) -> i64 {
    (ms / DAY_MS) as i64
}

fn epoch_ms(year: i64, month: u32, day: u32) -> u64 {
    days_from_civil(year, month, day).max(0) as u64 * DAY_MS
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
