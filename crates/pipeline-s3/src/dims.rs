//! The dimension tables (`cars`, `car_models`, `car_colors`) as Parquet in S3.
//!
//! Layout: `s3://<bucket>/<prefix>/<table>/part-*.parquet`, the directory-of-parts layout Spark
//! writes. The loader reads every Parquet object under a table's directory and ignores Spark and
//! Hadoop side files (`_SUCCESS`, `.crc`, names starting with `_` or `.`), so tables written by
//! this project and by the seed's Spark job both load. Columns are found by name and integer
//! columns are widened or narrowed as needed (Spark writes Python ints as int64).

use std::sync::Arc;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use uuid::Uuid;

use pipeline_core::join::{Car, CarColor, CarModel, DimTables};

use crate::store::{ObjectStore, S3Error};

/// What went wrong reading or writing a dimension table.
#[derive(Debug, thiserror::Error)]
pub enum DimsError {
    /// No Parquet object under the table's directory.
    #[error("table `{table}` not found: no Parquet files under {url}; run `generator dims` first")]
    Missing { table: &'static str, url: String },
    /// An object that is not readable Parquet.
    #[error("{url} is not a readable Parquet file ({detail}); rewrite the table with `generator dims`")]
    Corrupt { url: String, detail: String },
    /// A Parquet file whose columns do not fit the table.
    #[error("{url}: {problem}")]
    Schema { url: String, problem: TableError },
    /// The object store failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// Writing Parquet failed (out of memory and the like).
    #[error("encoding table `{table}` as Parquet failed: {detail}")]
    Encode { table: &'static str, detail: String },
}

/// A column problem in one record batch.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A required column is missing.
    #[error("column `{0}` is missing")]
    MissingColumn(&'static str),
    /// A column has a type that does not convert.
    #[error("column `{column}` has type {data_type}, expected {expected}")]
    Type { column: &'static str, data_type: DataType, expected: &'static str },
    /// A null where the table needs a value.
    #[error("column `{column}` is null in row {row}")]
    Null { column: &'static str, row: usize },
    /// An integer too large for the column's type.
    #[error("column `{column}` value {value} in row {row} does not fit in 32 bits")]
    OutOfRange { column: &'static str, row: usize, value: i64 },
}

/// A row type stored as a dimension table.
pub trait Table: Sized {
    /// Directory name under the dims prefix.
    const NAME: &'static str;
    /// The Arrow schema written.
    fn schema() -> SchemaRef;
    /// Rows → one record batch.
    fn to_batch(rows: &[Self]) -> RecordBatch;
    /// One record batch → rows (columns by name).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, TableError>;
}

fn column<'a>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a ArrayRef, TableError> {
    batch.column_by_name(name).ok_or(TableError::MissingColumn(name))
}

fn int64s(batch: &RecordBatch, name: &'static str) -> Result<Vec<i64>, TableError> {
    let col = column(batch, name)?;
    if !col.data_type().is_integer() {
        return Err(TableError::Type { column: name, data_type: col.data_type().clone(), expected: "an integer" });
    }
    let cast = arrow_cast::cast(col, &DataType::Int64).map_err(|_| TableError::Type {
        column: name,
        data_type: col.data_type().clone(),
        expected: "a 64-bit integer",
    })?;
    let values = cast.as_primitive::<Int64Type>();
    if let Some(row) = (0..values.len()).find(|&i| values.is_null(i)) {
        return Err(TableError::Null { column: name, row });
    }
    Ok(values.values().to_vec())
}

fn int32s(batch: &RecordBatch, name: &'static str) -> Result<Vec<i32>, TableError> {
    int64s(batch, name)?
        .into_iter()
        .enumerate()
        .map(|(row, value)| i32::try_from(value).map_err(|_| TableError::OutOfRange { column: name, row, value }))
        .collect()
}

fn strings(batch: &RecordBatch, name: &'static str) -> Result<Vec<String>, TableError> {
    let col = column(batch, name)?;
    let cast = match col.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => arrow_cast::cast(col, &DataType::Utf8).ok(),
        _ => None,
    }
    .ok_or_else(|| TableError::Type { column: name, data_type: col.data_type().clone(), expected: "a string" })?;
    let values = cast.as_string::<i32>();
    (0..values.len())
        .map(|row| {
            if values.is_null(row) {
                Err(TableError::Null { column: name, row })
            } else {
                Ok(values.value(row).to_owned())
            }
        })
        .collect()
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(schema, columns).expect("columns are built from the schema's own rows")
}

impl Table for Car {
    const NAME: &'static str = "cars";

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("car_id", DataType::Int64, false),
            Field::new("driver_id", DataType::Int64, false),
            Field::new("model_id", DataType::Int32, false),
            Field::new("color_id", DataType::Int32, false),
        ]))
    }

    fn to_batch(rows: &[Self]) -> RecordBatch {
        batch(
            Self::schema(),
            vec![
                Arc::new(rows.iter().map(|r| r.car_id).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| r.driver_id).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| r.model_id).collect::<Int32Array>()),
                Arc::new(rows.iter().map(|r| r.color_id).collect::<Int32Array>()),
            ],
        )
    }

    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>, TableError> {
        let (car, driver, model, color) =
            (int64s(b, "car_id")?, int64s(b, "driver_id")?, int32s(b, "model_id")?, int32s(b, "color_id")?);
        Ok((0..b.num_rows())
            .map(|i| Car { car_id: car[i], driver_id: driver[i], model_id: model[i], color_id: color[i] })
            .collect())
    }
}

impl Table for CarModel {
    const NAME: &'static str = "car_models";

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("model_id", DataType::Int32, false),
            Field::new("car_brand", DataType::Utf8, false),
            Field::new("car_model", DataType::Utf8, false),
        ]))
    }

    fn to_batch(rows: &[Self]) -> RecordBatch {
        batch(
            Self::schema(),
            vec![
                Arc::new(rows.iter().map(|r| r.model_id).collect::<Int32Array>()),
                Arc::new(rows.iter().map(|r| Some(r.car_brand.as_str())).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| Some(r.car_model.as_str())).collect::<StringArray>()),
            ],
        )
    }

    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>, TableError> {
        let (ids, brands, models) = (int32s(b, "model_id")?, strings(b, "car_brand")?, strings(b, "car_model")?);
        Ok(ids
            .into_iter()
            .zip(brands)
            .zip(models)
            .map(|((model_id, car_brand), car_model)| CarModel { model_id, car_brand, car_model })
            .collect())
    }
}

impl Table for CarColor {
    const NAME: &'static str = "car_colors";

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("color_id", DataType::Int32, false),
            Field::new("color_name", DataType::Utf8, false),
        ]))
    }

    fn to_batch(rows: &[Self]) -> RecordBatch {
        batch(
            Self::schema(),
            vec![
                Arc::new(rows.iter().map(|r| r.color_id).collect::<Int32Array>()),
                Arc::new(rows.iter().map(|r| Some(r.color_name.as_str())).collect::<StringArray>()),
            ],
        )
    }

    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>, TableError> {
        let (ids, names) = (int32s(b, "color_id")?, strings(b, "color_name")?);
        Ok(ids.into_iter().zip(names).map(|(color_id, color_name)| CarColor { color_id, color_name }).collect())
    }
}

/// Encodes rows as one snappy-compressed Parquet file.
pub fn to_parquet<T: Table>(rows: &[T]) -> Result<Vec<u8>, DimsError> {
    let encode = |e: parquet::errors::ParquetError| DimsError::Encode { table: T::NAME, detail: e.to_string() };
    let batch = T::to_batch(rows);
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(encode)?;
    writer.write(&batch).map_err(encode)?;
    writer.close().map_err(encode)?;
    Ok(buf)
}

/// Decodes every row of one Parquet file; `url` names it in errors.
pub fn from_parquet<T: Table>(bytes: Bytes, url: &str) -> Result<Vec<T>, DimsError> {
    let corrupt = |detail: String| DimsError::Corrupt { url: url.to_owned(), detail };
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(|e| corrupt(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        rows.extend(T::from_batch(&batch).map_err(|problem| DimsError::Schema { url: url.to_owned(), problem })?);
    }
    Ok(rows)
}

/// The directory of a table: `<prefix>/<table>/`.
pub fn table_dir<T: Table>(prefix: &str) -> String {
    format!("{}/{}/", prefix.trim_matches('/'), T::NAME)
}

/// Whether a key in a table directory is a data file (Spark/Hadoop side files are not).
pub(crate) fn is_data_file(dir: &str, key: &str) -> bool {
    let name = &key[dir.len()..];
    !name.is_empty() && !name.contains('/') && !name.starts_with(['_', '.']) && !name.ends_with(".crc")
}

/// Reads every row of table `T` under `prefix`, from all its Parquet parts.
pub async fn load_table<T: Table>(store: &ObjectStore, prefix: &str) -> Result<Vec<T>, DimsError> {
    let dir = table_dir::<T>(prefix);
    let keys: Vec<String> = store.list(&dir).await?.into_iter().filter(|k| is_data_file(&dir, k)).collect();
    if keys.is_empty() {
        return Err(DimsError::Missing { table: T::NAME, url: store.url(&dir) });
    }
    let mut rows = Vec::new();
    for key in keys {
        let bytes = store.get(&key).await?;
        rows.extend(from_parquet::<T>(bytes, &store.url(&key))?);
    }
    Ok(rows)
}

/// Replaces table `T` under `prefix` with `rows`: the new part is written first, then the old
/// parts are deleted, so a reader never finds the table missing (it may briefly see both, and
/// the join keeps one row per key).
pub async fn write_table<T: Table>(store: &ObjectStore, prefix: &str, rows: &[T]) -> Result<String, DimsError> {
    let dir = table_dir::<T>(prefix);
    let old = store.list(&dir).await?;
    let key = format!("{dir}part-00000-{}.snappy.parquet", Uuid::new_v4());
    store.put(&key, to_parquet(rows)?).await?;
    for stale in old.iter().filter(|k| **k != key) {
        store.delete(stale).await?;
    }
    Ok(key)
}

/// Loads all three tables.
pub async fn load_tables(store: &ObjectStore, prefix: &str) -> Result<DimTables, DimsError> {
    Ok(DimTables {
        cars: load_table(store, prefix).await?,
        models: load_table(store, prefix).await?,
        colors: load_table(store, prefix).await?,
    })
}

/// Writes all three tables (colors and models first, so cars never reference a missing
/// table).
pub async fn write_tables(store: &ObjectStore, prefix: &str, tables: &DimTables) -> Result<(), DimsError> {
    write_table(store, prefix, &tables.colors).await?;
    write_table(store, prefix, &tables.models).await?;
    write_table(store, prefix, &tables.cars).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_round_trip() {
        let t = DimTables::seed(50, 1);
        let cars = from_parquet::<Car>(to_parquet(&t.cars).unwrap().into(), "mem").unwrap();
        let models = from_parquet::<CarModel>(to_parquet(&t.models).unwrap().into(), "mem").unwrap();
        let colors = from_parquet::<CarColor>(to_parquet(&t.colors).unwrap().into(), "mem").unwrap();
        assert_eq!(DimTables { cars, models, colors }, t);
    }

    #[test]
    fn spark_style_int64_ids_and_reordered_columns_load() {
        // Spark infers Python ints as bigint and may order columns differently.
        let schema = Arc::new(Schema::new(vec![
            Field::new("color_name", DataType::Utf8, true),
            Field::new("color_id", DataType::Int64, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["Black", "Silver"])), Arc::new(Int64Array::from(vec![1, 8]))],
        )
        .unwrap();
        let rows = CarColor::from_batch(&b).unwrap();
        assert_eq!(rows[1], CarColor { color_id: 8, color_name: "Silver".into() });
    }

    #[test]
    fn bad_columns_are_named() {
        let schema = Arc::new(Schema::new(vec![Field::new("color_id", DataType::Int64, true)]));
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        assert_eq!(CarColor::from_batch(&b).unwrap_err().to_string(), "column `color_name` is missing");
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("color_id", DataType::Int64, true),
                Field::new("color_name", DataType::Utf8, true),
            ])),
            vec![Arc::new(Int64Array::from(vec![Some(1), None])), Arc::new(StringArray::from(vec!["a", "b"]))],
        )
        .unwrap();
        assert_eq!(CarColor::from_batch(&b).unwrap_err().to_string(), "column `color_id` is null in row 1");
        let big = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("color_id", DataType::Int64, true),
                Field::new("color_name", DataType::Utf8, true),
            ])),
            vec![Arc::new(Int64Array::from(vec![1i64 << 40])), Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        assert!(CarColor::from_batch(&big).unwrap_err().to_string().contains("does not fit in 32 bits"));
    }

    #[test]
    fn corrupt_bytes_name_the_object() {
        let err = from_parquet::<Car>(Bytes::from_static(b"not parquet"), "s3://b/k").unwrap_err();
        assert!(err.to_string().starts_with("s3://b/k is not a readable Parquet file"), "{err}");
    }

    #[test]
    fn side_files_are_skipped() {
        let dir = "data/dims/cars/";
        assert!(is_data_file(dir, "data/dims/cars/part-00000-abc.snappy.parquet"));
        assert!(is_data_file(dir, "data/dims/cars/part-00001"));
        for side in ["_SUCCESS", ".part-00000.crc", "part-1.parquet.crc", "_temporary", "", "sub/part-0"] {
            assert!(!is_data_file(dir, &format!("{dir}{side}")), "{side}");
        }
    }
}
