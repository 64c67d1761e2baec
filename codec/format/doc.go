// Package format owns the built-in payload formats a route renders messages in: envelope (the
// default), raw, sensoro, bewhere, bewhere-full, measurement, and custom templates with $$field
// placeholders. It is pure: no I/O, no goroutines, and no allocations per message once the
// caller's buffer has room.
//
// A route picks its format by name with Lookup(name, Options) and renders each Message with
// Format.Append, or a whole batch with a Builder. In every format the request body of a batch
// is a JSON array with one element per message, `[m1,m2,…]` (Format.Body is BodyJSONArray;
// the HTTPS forwarding spec: "The body is a JSON array that can include one or more messages"). Strings are
// escaped like encoding/json with HTML escaping off; record values are copied byte for byte.
//
// # Message
//
// A Message carries the device's identity and metadata (device, serial, imei, iccid,
// custom1..custom3, tags, groups, account), its place in the device's stream (seq, index,
// receivedAt in Unix ms), the delivery attempt (0-based), the record (Data: the JSON object
// the device sent), and its kind: a data record, or a command result (task id, result code,
// and the result data in Data). Its message id is "<device>-<seq>-<index>", the same in every
// format and stable across retries. Where this documentation says "null if empty", an empty
// string is rendered as JSON null.
//
// # Secret custom fields
//
// A custom field may hold a device's credential (its Azure IoT Hub key, for a route's
// azure_iot_hub auth). Message.Secret names the custom fields that are secrets: every format
// renders a secret field exactly as an empty one — absent from measurement's deviceFields,
// null (or nothing, inside a longer string) for a template's $$custom1..$$custom3 — so it
// never reaches a request body. The value stays in the Message: the route's URL and headers
// ([CUSTOM1]) and its per-device auth read it there, as credential carriers by design. It
// costs one branch per custom field rendered.
//
// # envelope
//
// The relay's own envelope, exactly as codec/envelope renders it:
//
//	{"msgId":"SN1-7-0","serial":"SN1","imei":"…","iccid":"…","seq":7,"index":0,
//	 "receivedAt":"2026-11-22T10:00:00.123Z","attempt":0,"data":{record}}
//
// Empty identity strings keep their keys as ""; a command result's task id and result code
// are not part of it (data holds the result data).
//
// # raw
//
// The record exactly as the device sent it (null if empty).
//
// # sensoro
//
// SENSORO webhook pushes (SENSORO's webhook spec). A data message is a sensor-data push, a command result a
// task event:
//
//	| key         | sensor-data push                       | task event                 |
//	|-------------|----------------------------------------|----------------------------|
//	| appId       | option app_id (required)               | same                       |
//	| sn          | serial, else the device identity       | same (not in the seed)     |
//	| taskId      | —                                      | task id, as a string       |
//	| type        | "text"                                 | "event"                    |
//	| deviceType  | option device_type ("" if unset)       | —                          |
//	| createdTime | receivedAt, Unix ms (a number)         | same                       |
//	| msgId       | the message id (a string)              | same                       |
//	| data        | the record, verbatim                   | —                          |
//	| resultCode  | —                                      | result code (0 success)    |
//	| resultData  | —                                      | the result data, {} if none|
//
// The seed's parameter table calls msgId a number but its sample shows a string; the relay's
// id is a string because it must be unique and stable per message. taskId is a string as in
// the table (the sample shows a number). "sn" is added to task events so that a receiver knows
// the device. "encryptData" (safe mode) is encryption of the whole push, done where requests
// are signed, not here.
//
// # bewhere and bewhere-full
//
// BeWhere push routes (BeWhere's push spec): bewhere is the spec's default payload ({"sensorData",
// "networkLocation", "deviceInfo"}), bewhere-full the seed's custom payload that adds
// battery_capacity, location, distance, totalRuntime, sidSender and tags. Both are templates
// (BeWhereTemplate, BeWhereFullTemplate), rendered with the placeholder rules below, so each
// value keeps its JSON type and a field the record lacks is null. The devices of a BeWhere-like
// fleet send records whose top-level names are the payload's names, so:
//
//	| payload key                           | value                                                   |
//	|---------------------------------------|---------------------------------------------------------|
//	| sensorData.<name>, for eventType,     | the record's top-level field <name>, as sent            |
//	|   direction, navStat, mnc, speed,     |                                                         |
//	|   impact, rsrp, temperature, altitude,|                                                         |
//	|   latitude, longitude, batteryLevel,  |                                                         |
//	|   aux1..aux4, aux1_json, urat, hdop,  |                                                         |
//	|   mcc, lac, cid, pressure, numSvs,    |                                                         |
//	|   locationSource, location, light,    |                                                         |
//	|   humidity, imsi, totalRuntime        |                                                         |
//	| sensorData.distance                   | the record's "odometer"                                 |
//	| sensorData.sim                        | the record's "sim", else the ICCID                      |
//	| sensorData.timestamp                  | the record's "timestamp" in Unix ms, else receivedAt    |
//	| sensorData.received                   | receivedAt, Unix ms                                     |
//	| sensorData.battery_capacity           | the record's "battery_capacity_counter", else its       |
//	|                                       |   "batteryLevel" as a percentage string ("87%")         |
//	| networkLocation.latitude/longitude/   | the record's "networkLatitude", "networkLongitude",     |
//	|   accuracy                            |   "networkAccuracy"                                     |
//	| deviceInfo.imei, .serialNumber        | the device's IMEI and serial (null if empty)            |
//	| deviceInfo.sender, .version, .name,   | the record's fields of those names                      |
//	|   .sidSender                          |                                                         |
//	| deviceInfo.tags                       | the device's tags, an array of strings                  |
//
// Record times ("timestamp", "gpsTimestamp") may be Unix seconds or milliseconds (numbers below
// 10^11 are seconds, fractions allowed) or RFC 3339 strings; the payload always carries Unix
// milliseconds, or seconds for the _seconds placeholders.
//
// # measurement
//
// The measurement message of the HTTPS forwarding spec: one report per message, one observation per number in
// the record.
//
//	| report key                              | value                                           |
//	|-----------------------------------------|-------------------------------------------------|
//	| hashId                                  | the message id                                  |
//	| environmentHashId                       | the account (null if empty)                     |
//	| connectivityEnvironmentReportTypeHashId | null                                            |
//	| monitoringEnvironmentReportTypeHashId   | null                                            |
//	| observations                            | see below                                       |
//	| deviceHashId                            | the device identity                             |
//	| deviceIdentifier                        | serial, else the device identity                |
//	| deviceFields                            | serial, imei, iccid, custom1..3 (strings), tags,|
//	|                                         |   groups (arrays); only those that are set      |
//	|                                         |   (and, of the custom fields, not secret)       |
//	| fields                                  | the record's members that are not observations  |
//	|                                         |   (a result's taskId and resultCode first)      |
//	| locationHashId, userHashId              | null                                            |
//	| locationFields                          | {}                                              |
//	| generatedAt                             | the record's "timestamp" (as for bewhere), else |
//	|                                         |   receivedAt; RFC 3339, UTC, milliseconds       |
//	| createdAt                               | receivedAt, RFC 3339                            |
//	| attempt                                 | the delivery attempt, 0-based                   |
//
// Each top-level member of the record goes to exactly one place:
//
//	| record member                       | observations                                         |
//	|-------------------------------------|------------------------------------------------------|
//	| "temperature": 21.57                | one, quantity "temperature", channelIndex 0          |
//	| "lonlat": [4.89, 52.37]             | one per element, quantity "lonlat", channelIndex 0, 1|
//	|   (a non-empty array of numbers)    |                                                      |
//	| "magnetic": {"x": 1, "y": 2}        | one per member, quantity "magnetic.x", "magnetic.y", |
//	|   (a non-empty object of numbers)   |   channelIndex 0                                     |
//	| the "timestamp" used as generatedAt | none: in fields                                      |
//	| anything else: strings, booleans,   | none: copied into fields under its key, as sent      |
//	|   null, mixed or deeper structures  |                                                      |
//
// An observation is {"connectivityEnvironmentQuantityHashId", "monitoringEnvironmentQuantityHashId"
// (both the quantity name), "portHashId": null, "channelIndex", "orderOfMagnitude",
// "significand", "formattedValue", "unit": null, "generatedAt" (the report's), "performance": 1}.
// The value is significand × 10^orderOfMagnitude, read from the number's decimal text without
// going through a float: the significand has no trailing zeros (7827000 is 7827 and 3, as in the
// seed; 230.41 is 23041 and -2 — the seed's second example, with 0, contradicts its first) and
// at most 15 digits, so that a float64 or JavaScript number holds it exactly; longer numbers are
// rounded half away from zero. formattedValue groups thousands with commas and uses "." for the
// fraction ("7,827,000", "230.41", "-0.123"), switching to exponent notation where JavaScript
// would ("1.5e+21", "2e-7"). A command result is reported the same way from its result data.
//
// # notification
//
// The notification messages of a route with notifications: true (the HTTPS forwarding spec): a
// KindNotification message's Data is the object AppendNotification built when the relay
// stored it — hashId, environmentHashId (the account, null without one) and observations, each
// {hashId, object "device", action add|update|delete, device {identifier}, createdAt,
// updatedAt, deletedAt (null unless deleted)} with times as ISO 8601 strings in UTC with
// milliseconds — and the format appends generatedAt (ReceivedAt: when it was stored) and
// attempt. A message of another kind is rendered as the envelope.
//
// # template
//
// A custom JSON template (BeWhere's "Post JSON format"), compiled once with Compile. Any
// JSON value is a template; whitespace between its tokens is dropped. In its strings, $$
// followed by a letter or '_' starts a placeholder:
//
//   - A string that is exactly one placeholder, "$$speed", is replaced by the value with its
//     own JSON type: numbers stay numbers, objects stay objects, tags is an array. A value that
//     is missing (the record has no such field, the device has no such identity string, a data
//     message has no taskId) becomes null.
//   - A placeholder inside a longer string, or in a key, is replaced by its text: strings
//     without quotes, numbers and literals as written, objects and arrays as their JSON text,
//     tags and groups comma-separated, missing values and null as nothing. The text is
//     escaped, so the result is always a valid string ("SN $$serial" → "SN a\"b").
//   - $$data is the whole record; $$data.<path> reads into it: path segments are separated by
//     '.', made of letters, digits, '_' and '-', and a segment of digits indexes an array
//     ($$data.lonlat.0, $$data.position.lat).
//   - Any other name must be a built-in placeholder (Placeholders lists them), or Compile fails.
//     To write a literal "$$name", escape a dollar: "\u0024$name".
//
// Built-in placeholders besides the BeWhere names above:
//
//	| placeholder                   | value                                                      |
//	|-------------------------------|------------------------------------------------------------|
//	| device                        | the device identity (serial, or IMEI)                      |
//	| serial, serialNumber          | the serial (null if empty)                                 |
//	| imei, iccid                   | IMEI, ICCID (null if empty)                                |
//	| custom1, custom2, custom3     | the custom fields (null if empty or secret)                |
//	| account                       | the account (null if empty)                                |
//	| tags, groups                  | arrays of strings                                          |
//	| seq, index, attempt           | numbers                                                    |
//	| msgId                         | "<device>-<seq>-<index>"                                   |
//	| receivedAt                    | RFC 3339 string, UTC, milliseconds                         |
//	| received                      | receivedAt, Unix ms                                        |
//	| kind                          | "data" or "result"                                         |
//	| taskId, resultCode, resultData| a command result's; null for data messages                 |
//	| data, data.<path>             | the record, or a value in it                               |
//	| timestamp, timestamp_seconds  | the record's "timestamp" in Unix ms / s, else receivedAt   |
//	| gpsTimestamp,                 | the record's "gpsTimestamp" in Unix ms / s, else null      |
//	|   gpsTimestamp_seconds        |                                                            |
//	| battery_capacity_counter      | the record's field of that name, else its "batteryLevel"   |
//	|                               |   with "%" appended, else null                             |
//	| sim                           | the record's "sim", else the ICCID                         |
//
// Compile errors are *TemplateError values with the byte offset and the JSON path
// ("sensorData.speed", "list[2]") of the problem. A record that is not one valid JSON object is
// rendered as if empty, so a compiled template always produces valid JSON.
package format
