package format

// BeWhereTemplate is the default BeWhere push payload (BeWhere's push spec), as the format "bewhere"
// renders it. Its sensor and network names read the record's top-level fields of the same name;
// see the package documentation for the placeholders with a special meaning.
const BeWhereTemplate = `{
"sensorData": {
"eventType": "$$eventType",
"direction": "$$direction",
"navStat": "$$navStat",
"mnc": "$$mnc",
"speed": "$$speed",
"impact": "$$impact",
"rsrp": "$$rsrp",
"temperature": "$$temperature",
"altitude": "$$altitude",
"latitude": "$$latitude",
"batteryLevel": "$$batteryLevel",
"aux1": "$$aux1",
"aux2": "$$aux2",
"aux3": "$$aux3",
"aux4": "$$aux4",
"aux1_json": "$$aux1_json",
"sim": "$$sim",
"urat": "$$urat",
"hdop": "$$hdop",
"timestamp": "$$timestamp",
"mcc": "$$mcc",
"lac": "$$lac",
"pressure": "$$pressure",
"locationSource": "$$locationSource",
"received": "$$received",
"cid": "$$cid",
"numSvs": "$$numSvs",
"light": "$$light",
"longitude": "$$longitude",
"humidity": "$$humidity",
"imsi": "$$imsi"
},
"networkLocation": {
"latitude": "$$networkLatitude",
"longitude": "$$networkLongitude",
"accuracy": "$$networkAccuracy"
},
"deviceInfo": {
"imei": "$$imei",
"serialNumber": "$$serialNumber",
"sender": "$$sender",
"version": "$$version",
"name": "$$name"
}
}`

// BeWhereFullTemplate is the BeWhere custom payload that adds tags, sidSender, location,
// distance, totalRuntime and battery_capacity (BeWhere's push spec), as the format "bewhere-full"
// renders it.
const BeWhereFullTemplate = `{
"sensorData": {
"eventType": "$$eventType",
"direction": "$$direction",
"navStat": "$$navStat",
"mnc": "$$mnc",
"speed": "$$speed",
"impact": "$$impact",
"rsrp": "$$rsrp",
"temperature": "$$temperature",
"altitude": "$$altitude",
"latitude": "$$latitude",
"batteryLevel": "$$batteryLevel",
"battery_capacity": "$$battery_capacity_counter",
"aux1": "$$aux1",
"aux2": "$$aux2",
"aux3": "$$aux3",
"aux4": "$$aux4",
"aux1_json": "$$aux1_json",
"sim": "$$sim",
"urat": "$$urat",
"hdop": "$$hdop",
"timestamp": "$$timestamp",
"mcc": "$$mcc",
"lac": "$$lac",
"pressure": "$$pressure",
"locationSource": "$$locationSource",
"location": "$$location",
"received": "$$received",
"cid": "$$cid",
"numSvs": "$$numSvs",
"light": "$$light",
"longitude": "$$longitude",
"humidity": "$$humidity",
"imsi": "$$imsi",
"distance": "$$odometer",
"totalRuntime": "$$totalRuntime"
},
"networkLocation": {
"latitude": "$$networkLatitude",
"longitude": "$$networkLongitude",
"accuracy": "$$networkAccuracy"
},
"deviceInfo": {
"imei": "$$imei",
"serialNumber": "$$serialNumber",
"sender": "$$sender",
"version": "$$version",
"name": "$$name",
"sidSender": "$$sidSender",
"tags": "$$tags"
}
}`
