// The PostgreSQL JDBC driver (Debian's libpostgresql-jdbc-java) against
// eon: connect, DDL, prepared CRUD (server-side prepared after the driver's
// threshold), transactions, types, errors with SQLSTATE, and
// DatabaseMetaData.getTables/getColumns. Usage: java ClientTest jdbc:postgresql://…
import java.math.BigDecimal;
import java.sql.*;
import java.util.*;

public class ClientTest {
    static void check(String what, Object got, Object want) {
        if (!Objects.equals(got, want)) {
            System.out.println("FAIL " + what + ": got " + got + ", want " + want);
            System.exit(1);
        }
        System.out.println("ok   " + what);
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            Statement s = c.createStatement();
            s.execute("DROP TABLE IF EXISTS jdbc_parts");
            s.execute("DROP TABLE IF EXISTS jdbc_items");
            s.execute("CREATE TABLE jdbc_items (id int PRIMARY KEY, name varchar(20) NOT NULL, "
                    + "price numeric(8,2), big bigint, f double precision, ok boolean, day date, at timestamp, tag uuid)");
            PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
            UUID tag = UUID.fromString("0b5e3c1c-8a0e-4f6b-9a3e-1c2d3e4f5a6b");
            // Ten executions: the driver switches to a named server-side
            // statement (and binary transfer) after five.
            for (int i = 1; i <= 10; i++) {
                ins.setInt(1, i);
                ins.setString(2, "item" + i);
                ins.setBigDecimal(3, new BigDecimal("1.25").multiply(BigDecimal.valueOf(i)));
                ins.setLong(4, 1L << 40 | i);
                ins.setDouble(5, i / 4.0);
                ins.setBoolean(6, i % 2 == 0);
                ins.setDate(7, java.sql.Date.valueOf("2024-02-29"));
                ins.setTimestamp(8, Timestamp.valueOf("2024-02-29 13:14:15.123456"));
                ins.setObject(9, tag);
                check("insert " + i, ins.executeUpdate(), 1);
            }
            PreparedStatement q = c.prepareStatement("SELECT * FROM jdbc_items WHERE id = ?");
            for (int i = 1; i <= 10; i++) {
                q.setInt(1, i);
                try (ResultSet r = q.executeQuery()) {
                    check("row " + i + " found", r.next(), true);
                    String got = r.getInt(1) + " " + r.getString(2) + " " + r.getBigDecimal(3) + " " + r.getLong(4)
                            + " " + r.getDouble(5) + " " + r.getBoolean(6) + " " + r.getDate(7) + " " + r.getTimestamp(8)
                            + " " + r.getObject(9);
                    String want = i + " item" + i + " " + new BigDecimal("1.25").multiply(BigDecimal.valueOf(i)) + " "
                            + (1L << 40 | i) + " " + (i / 4.0) + " " + (i % 2 == 0) + " 2024-02-29 2024-02-29 13:14:15.123456 " + tag;
                    check("row " + i + " values", got, want);
                }
            }
            check("update count", s.executeUpdate("UPDATE jdbc_items SET price = 0 WHERE id > 8"), 2);

            c.setAutoCommit(false);
            s.executeUpdate("DELETE FROM jdbc_items WHERE id = 1");
            c.rollback();
            s.executeUpdate("DELETE FROM jdbc_items WHERE id = 2");
            c.commit();
            c.setAutoCommit(true);
            try (ResultSet r = s.executeQuery("SELECT count(*) FROM jdbc_items")) {
                r.next();
                check("rollback kept row 1, commit removed row 2", r.getLong(1), 9L);
            }

            try {
                s.executeUpdate("INSERT INTO jdbc_items (id, name) VALUES (1, 'dup')");
                check("duplicate key", "no error", "23505");
            } catch (SQLException e) {
                check("duplicate key SQLSTATE", e.getSQLState(), "23505");
            }
            try {
                s.executeQuery("SELECT * FROM jdbc_nothing");
                check("undefined table", "no error", "42P01");
            } catch (SQLException e) {
                check("undefined table SQLSTATE", e.getSQLState(), "42P01");
            }

            DatabaseMetaData md = c.getMetaData();
            check("product name", md.getDatabaseProductName(), "PostgreSQL");
            List<String> tables = new ArrayList<>();
            try (ResultSet t = md.getTables(null, "public", "jdbc%", new String[] {"TABLE"})) {
                while (t.next()) tables.add(t.getString("TABLE_NAME"));
            }
            check("getTables", tables, List.of("jdbc_items"));
            List<String> cols = new ArrayList<>();
            try (ResultSet r = md.getColumns(null, "public", "jdbc_items", null)) {
                while (r.next()) {
                    cols.add(r.getString("COLUMN_NAME") + ":" + r.getString("TYPE_NAME") + ":" + r.getInt("COLUMN_SIZE")
                            + ":" + r.getString("IS_NULLABLE"));
                }
            }
            check("getColumns", cols, List.of("id:int4:10:NO", "name:varchar:20:NO", "price:numeric:8:YES",
                    "big:int8:19:YES", "f:float8:17:YES", "ok:bool:1:YES", "day:date:13:YES",
                    "at:timestamp:29:YES", "tag:uuid:2147483647:YES"));
            List<String> keys = new ArrayList<>();
            try (ResultSet r = md.getPrimaryKeys(null, "public", "jdbc_items")) {
                while (r.next()) {
                    keys.add(r.getString("COLUMN_NAME") + ":" + r.getInt("KEY_SEQ") + ":" + r.getString("PK_NAME"));
                }
            }
            check("getPrimaryKeys", keys, List.of("id:1:jdbc_items_pkey"));
            s.execute("CREATE TABLE jdbc_parts (id int PRIMARY KEY, item int REFERENCES jdbc_items (id))");
            List<String> fks = new ArrayList<>();
            try (ResultSet r = md.getImportedKeys(null, "public", "jdbc_parts")) {
                while (r.next()) {
                    fks.add(r.getString("FKCOLUMN_NAME") + "->" + r.getString("PKTABLE_NAME") + "."
                            + r.getString("PKCOLUMN_NAME") + ":" + r.getString("FK_NAME"));
                }
            }
            check("getImportedKeys", fks, List.of("item->jdbc_items.id:jdbc_parts_item_fkey"));
        }
        System.out.println("jdbc: all checks passed");
    }
}
