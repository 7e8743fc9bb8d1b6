// The type each shipped dashboard must satisfy: Grafana's own Dashboard type from @grafana/schema.
// test_grafana_schema.py appends `export const dashboardN: Checked = <the JSON>;` and runs tsc --strict,
// so an unknown key, a wrong type or a missing required field anywhere in a dashboard fails.
import type { AnnotationQuery, Dashboard, DataQuery } from "@grafana/schema";

// JSON has no enums: let a string enum member (e.g. MappingType.ValueToText) be written as its value ("value").
type Lit<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Lit<U>>
      : T extends object
        ? { [K in keyof T]: Lit<T[K]> }
        : T;

// Grafana's Prometheus datasource keeps an annotation's query beside the generic fields
// (public/app/plugins/datasource/prometheus: expr, step, titleFormat, textFormat, tagKeys, useValueForTime).
interface PrometheusAnnotation extends AnnotationQuery<DataQuery> {
  expr?: string;
  step?: string;
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
}

type Checked = Lit<Omit<Dashboard, "annotations">> & { annotations?: { list?: Lit<PrometheusAnnotation>[] } };
