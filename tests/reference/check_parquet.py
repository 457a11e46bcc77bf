"""Reads eoinfer's GeoParquet outputs the way analysts do: geopandas (with the CRS) and DuckDB.

usage: check_parquet.py TILES.parquet|- EMBEDDINGS.parquet|-
Prints one JSON object with what each library saw.
"""
import json
import sys

import duckdb
import geopandas as gpd


def main() -> None:
    tiles, embeddings = sys.argv[1:3]
    out = {}
    if tiles != "-":
        g = gpd.read_parquet(tiles)
        out["tiles"] = {
            "rows": len(g),
            "epsg": g.crs.to_epsg(),
            "geom_types": sorted(set(g.geom_type)),
            "area_m2": [float(a) for a in g.area],
            "valid_pixels": [int(v) for v in g["valid_pixels"]],
        }
        con = duckdb.connect()
        cls = [c for c in g.columns if c.startswith("count_")]
        sums = con.execute(f"SELECT {', '.join(f'sum({c})' for c in cls)} FROM read_parquet(?)", [tiles]).fetchone()
        out["tiles"]["duckdb_class_sums"] = dict(zip(cls, [int(s) for s in sums]))
    if embeddings != "-":
        g = gpd.read_parquet(embeddings)
        dim = len(g["embedding"].iloc[0])
        out["embeddings"] = {
            "rows": len(g),
            "epsg": g.crs.to_epsg(),
            "geom_types": sorted(set(g.geom_type)),
            "dim": dim,
            "area_m2": sorted(set(round(float(a), 6) for a in g.area)),
        }
        con = duckdb.connect()
        q = f"""
            WITH e AS (SELECT patch_row, patch_col, embedding::FLOAT[{dim}] AS v FROM read_parquet(?)),
                 q AS (SELECT v FROM e WHERE patch_row = 0 AND patch_col = 0)
            SELECT patch_row, patch_col, array_cosine_similarity(e.v, q.v) AS sim FROM e, q ORDER BY sim DESC LIMIT 3
        """
        top = con.execute(q, [embeddings]).fetchall()
        out["embeddings"]["duckdb_top"] = [[int(r), int(c), float(s)] for r, c, s in top]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
